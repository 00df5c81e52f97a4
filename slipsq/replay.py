"""The replay job: captures and flow files through the engine, with alerts, outputs and a summary.

This is what `slipsq replay` runs; it lives here (not in cli.py) so tests drive it directly.
Time is packet (or flow) time, so two runs over the same input give the same alerts and verdicts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from slipsq import runmode
from slipsq.engine import Engine
from slipsq.errors import InputError
from slipsq.flow import Flow
from slipsq.output.alerts import AlertWriter
from slipsq.output.binetflow import BinetflowWriter
from slipsq.sink import Sink
from slipsq.sources.flowfiles.streams import binary_kind
from slipsq.verdict.replay import ReplayRecorder


@dataclass
class ReplayOptions:
    inputs: list[str]
    as_json: bool = False
    tuples: bool = False
    out_dir: str | None = None
    models_dir: str | None = None
    fmt: str = "auto"
    config_path: str | None = None
    progress: bool = False


def input_kind(path: str, fmt: str) -> str:
    """'pcap' (the compiled capture reader) or 'flows' (the flow-file readers, which detect their
    own format), from --format or from the file's first bytes."""
    if path != "-":
        p = Path(path)
        if not p.exists():
            raise InputError(f"{path}: no such file or directory")
        if p.is_file():
            try:
                with p.open("rb") as fh:
                    head = fh.read(4)
            except PermissionError:
                raise InputError(f"{path}: permission denied") from None
            except OSError as e:
                raise InputError(f"{path}: cannot read: {e.strerror}") from None
            if binary_kind(head) == "pcap":
                if fmt not in ("auto", "pcap"):
                    raise InputError(f"{path} is a packet capture, not {fmt}")
                return "pcap"
    if fmt == "pcap":
        if path == "-":
            raise InputError("packet captures cannot be read from standard input: give the file name")
        if Path(path).is_dir():
            raise InputError(f"{path} is a directory, not a packet capture")
        raise InputError(f"{path} is not a pcap or pcapng file (unknown magic number)")
    return "flows"


def _progress_bar(name: str, enabled: bool, stack: ExitStack) -> Callable[[int, int], None] | None:
    if not enabled:
        return None
    import click

    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = stack.enter_context(
                click.progressbar(length=max(total, 1), label=name, file=sys.stderr, show_eta=True))
            state["last"] = 0
        bar.update(done - state["last"])
        state["last"] = done

    return update


def run_replay(opts: ReplayOptions, stdout: TextIO) -> int:
    cfg = runmode.load_config(opts.config_path)
    models = runmode.load_engine_models(opts.models_dir, cfg)
    kinds = [(path, input_kind(path, opts.fmt)) for path in opts.inputs]  # fail before any output
    recorder = ReplayRecorder()
    with ExitStack() as stack:
        sinks: list[Sink] = [recorder]
        if not opts.tuples:
            sinks.append(AlertWriter(stdout, opts.as_json))
        if opts.out_dir:
            out = Path(opts.out_dir)
            try:
                out.mkdir(parents=True, exist_ok=True)
                files = [stack.enter_context((out / n).open("w")) for n in
                         ("alerts.jsonl", "alerts.log", "flows.binetflow")]
            except OSError as e:
                raise InputError(f"cannot write into {out}: {e.strerror}") from None
            sinks += [AlertWriter(files[0], True), AlertWriter(files[1], False), BinetflowWriter(files[2])]
        run = runmode.Offline(runmode.build_engine(cfg, models, runmode.make_allow(cfg)), sinks)
        engine = run.engine
        started = time.perf_counter()
        inputs: dict[str, Any] = {}
        for path, kind in kinds:
            if kind == "pcap":
                from slipsq.sources.pcap import replay_capture

                inputs[path] = replay_capture(run, path, progress=_progress_bar(path, opts.progress, stack))
            else:
                inputs[path] = _replay_flows(run, path, opts.fmt)
        run.finish()
        elapsed = time.perf_counter() - started
        summary = _summary(engine, recorder, inputs, elapsed)
        if opts.tuples:
            _print_tuples(engine, stdout, opts.as_json)
        _print_summary(summary, stdout, opts.as_json)
    damaged = [note for path, info in inputs.items() if (note := _damage(path, info))]
    for note in damaged:  # after the results: what was whole was analysed, but the input is not sound
        sys.stderr.write(f"slipsq: {note}\n")
    return InputError.code if damaged else 0


def _damage(path: str, info: dict[str, Any]) -> str | None:
    """One line for a capture whose records are cut short or corrupt, else None."""
    truncated, corrupt = info.get("truncated", 0), info.get("corrupt", 0)
    if not truncated and not corrupt:
        return None
    what = []
    if truncated:
        what.append("the file ends inside a record")
    if corrupt:
        what.append(f"{corrupt} corrupt record{'s' if corrupt > 1 else ''} (impossible lengths)")
    return (f"{path}: damaged capture: {' and '.join(what)}; the {info.get('packets', 0)} whole packets "
            f"were analysed")


def _replay_flows(run: runmode.Offline, path: str, fmt: str) -> dict[str, Any]:
    from slipsq.sources.flowfiles import open_flow_source

    source = open_flow_source(path, fmt)
    for item in source:
        if isinstance(item, Flow):
            run.flow(item)
        else:
            run.app(item)
    warning = source.warning()
    if warning:  # which rows were bad and why (file:line), so the admin can fix the exporter
        sys.stderr.write(f"slipsq: warning: {warning}\n")
    return {"format": source.format, **source.counts}


def _summary(engine: Engine, recorder: ReplayRecorder, inputs: dict[str, Any], elapsed: float) -> dict[str, Any]:
    t = engine.table.stats()
    c = engine.counters
    packets = int(t.get("packets", 0))
    return {
        "inputs": inputs,
        "packets": packets,
        "dropped_packets": int(t.get("dropped", 0)),
        "malformed_packets": int(t.get("malformed", 0)),
        "non_ip_packets": int(t.get("non_ip", 0)),
        "flows": c.flows,
        "evicted_flows": int(t.get("evicted", 0)),
        "alerts": c.alerts,
        "blocks": len(recorder.blocks),
        "blocked_ips": recorder.blocked_ips,
        "elapsed_s": round(elapsed, 3),
        "packets_per_s": round(packets / elapsed) if elapsed > 0 else 0,
        "flows_per_s": round(c.flows / elapsed) if elapsed > 0 else 0,
    }


def _print_summary(s: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps({"summary": s}) + "\n")
        return
    blocked = ", ".join(s["blocked_ips"]) or "none"
    out.write(
        f"\nsummary: {s['packets']} packets, {s['flows']} flows, {s['alerts']} alerts, "
        f"{s['blocks']} blocks, {s['dropped_packets']} packets dropped\n"
        f"  blocked IPs: {blocked}\n"
        f"  malformed packets skipped: {s['malformed_packets']}, non-IP packets: {s['non_ip_packets']}, "
        f"evicted flows: {s['evicted_flows']}\n"
        f"  {s['elapsed_s']:.2f} s, {s['packets_per_s']} packets/s, {s['flows_per_s']} flows/s\n")
    for name, info in s["inputs"].items():
        bad = {k: v for k, v in info.items() if k in ("bad_rows", "skipped_non_ip", "truncated", "corrupt") and v}
        if bad:
            out.write(f"  {name}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in bad.items()) + "\n")


def _print_tuples(engine: Engine, out: TextIO, as_json: bool) -> None:
    det = next((d for d in engine.detectors if d.name == "stratosphere"), None)
    rows: list[dict[str, Any]] = det.tuples() if det is not None else []  # type: ignore[attr-defined]
    for r in rows:
        if as_json:
            out.write(json.dumps(r) + "\n")
        else:
            out.write(f"{r['src_ip']:>15} -> {r['dst_ip']}:{r['dst_port']}/{r['proto']}  "
                      f"({r['flows']} flows)  {r['letters']}\n")
