"""The replay job: captures and flow files through the engine, with alerts, outputs and a summary.

This is what `slipsq replay` runs; it lives here (not in cli.py) so tests drive it directly.
Time is packet (or flow) time, so two runs over the same input give the same alerts and verdicts.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO, cast

from slipsq import runmode
from slipsq.engine import Engine
from slipsq.errors import InputError
from slipsq.output import formats, results
from slipsq.output.activity import ActivityWriter
from slipsq.output.alerts import AlertWriter
from slipsq.output.binetflow import BinetflowWriter
from slipsq.sink import Sink
from slipsq.sources import inputs as inputs_mod
from slipsq.sources.inputs import classify
from slipsq.verdict.replay import ReplayRecorder


@dataclass
class ReplayOptions:
    inputs: list[str]
    as_json: bool | None = False  # None: the config's output.json
    tuples: bool = False
    out_dir: str | None = None
    models_dir: str | None = None
    fmt: str = "auto"
    config_path: str | None = None
    progress: bool = False
    force: bool = False  # -o DIR may overwrite earlier results
    report: bool = False  # with out_dir: also DIR/report.html
    alert_format: str | None = None  # --alert-format; None: the config's output.format (formats.FORMATS)
    processes: int | None = None  # --processes; None: pipeline.default_processes()


class _Stdout(io.TextIOBase):
    """Standard output of a replay that writes a results folder: when its reader goes away (`-o DIR |
    head`), what was for it is dropped and the analysis goes on, so the folder is whole and the exit
    status still says whether an input was damaged. (Without a folder a gone reader ends the replay:
    cli.run_guarded, status 0, as `cat | head`.) Its descriptor then points at /dev/null, so the
    interpreter's last flush of sys.stdout finds nobody gone."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.gone = True
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (a test's buffer)
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


def input_kind(path: str, fmt: str) -> str:
    """'pcap' (the compiled capture reader), 'pcap-stream' or 'flows' (slipsq.sources.inputs)."""
    return classify(path, fmt).kind


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
    if opts.as_json is None:
        opts.as_json = bool(cfg["output.json"])
    models = runmode.load_engine_models(opts.models_dir, cfg)
    planned = inputs_mod.plan(opts.inputs, opts.fmt)  # fail before any output; in time order
    fmt = opts.alert_format or cfg["output.format"]
    shown = formats.resolve(fmt, opts.as_json)
    # a replay's syslog lines name no process (PROCID "-"): the same input gives the same bytes
    how: dict[str, Any] = {"procid": "-", "facility": cfg["output.syslog_facility"]}
    recorder = ReplayRecorder()
    if opts.out_dir:  # the folder's results are whole even when stdout's reader goes away
        stdout = cast(TextIO, _Stdout(stdout))
    with ExitStack() as stack:
        sinks: list[Sink] = [recorder]
        if not opts.tuples:
            sinks.append(AlertWriter(stdout, opts.as_json, fmt, **how))
        if opts.out_dir:
            extra = formats.RESULT_FILE.get(shown)
            files = results.open_results(opts.out_dir, opts.force, stack, extra)
            sinks += [AlertWriter(files[0], True), AlertWriter(files[1], False), BinetflowWriter(files[2]),
                      ActivityWriter(files[3])]
            if extra:
                sinks.append(AlertWriter(files[4], True, shown, **how))
        run = runmode.Offline(runmode.build_engine(cfg, models, runmode.make_allow(cfg)), sinks)
        engine = run.engine
        started = time.perf_counter()
        inputs: dict[str, Any] = {}
        processes = _processes(opts, planned)
        try:
            for inp in planned:
                refused = inputs_mod.overlap(inp, engine.now, [i for i in planned if i.path in inputs])
                inputs[inp.path] = {"refused": refused} if refused else inputs_mod.replay_input(
                    run, inp, opts.fmt, _progress_bar(inp.path, opts.progress, stack), processes)
            run.finish()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.replay): what was analysed is in the folder
            if opts.out_dir:       # as it went; its summary says so, and that the replay stopped there
                for inp in planned:  # the input it was in
                    if inp.path not in inputs:
                        inputs[inp.path] = {"interrupted": True}
                        break
                summary = _summary(engine, recorder, inputs, time.perf_counter() - started)
                summary["interrupted"] = True
                results.write_summary(opts.out_dir, summary)
            raise
        elapsed = time.perf_counter() - started
        summary = _summary(engine, recorder, inputs, elapsed)
        if opts.tuples:
            _print_tuples(engine, stdout, opts.as_json)
        # EVE, IDMEFv2 and syslog on stdout are for a program to read: the summary goes to stderr
        _print_summary(summary, sys.stderr if shown in formats.FOREIGN and not opts.tuples else stdout,
                       opts.as_json)
        if opts.out_dir:
            results.write_summary(opts.out_dir, summary)
    if opts.out_dir:  # after the files above are closed: the timelines read activity.jsonl back
        from slipsq.report import replay_outputs

        replay_outputs(opts.out_dir, cfg, opts.report)
    damaged = [note for path, info in inputs.items() if (note := results.damage(path, info))]
    for note in damaged:  # after the results: what was whole was analysed, but the input is not sound
        sys.stderr.write(f"slipsq: {note}\n")
    return InputError.code if damaged else 0


def _processes(opts: ReplayOptions, planned: list[Any]) -> int:
    """2 (a table process beside the engine: slipsq.pipeline) for one capture, when asked (or by
    default on two CPUs) and the system can fork; else 1. (sources.pcap takes that path only with
    the compiled reader and table, else its readable twins in one process.)"""
    from slipsq import pipeline

    wanted = pipeline.default_processes() if opts.processes is None else opts.processes
    one_capture = len(planned) == 1 and planned[0].kind == "pcap"
    return 2 if wanted > 1 and one_capture and hasattr(os, "fork") else 1


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
        if what := results.lost(info):
            out.write(f"  {name}: {what}\n")


def _print_tuples(engine: Engine, out: TextIO, as_json: bool) -> None:
    det = next((d for d in engine.detectors if d.name == "stratosphere"), None)
    rows: list[dict[str, Any]] = det.tuples() if det is not None else []  # type: ignore[attr-defined]
    for r in rows:
        if as_json:
            out.write(json.dumps(r) + "\n")
        else:
            out.write(f"{r['src_ip']:>15} -> {r['dst_ip']}:{r['dst_port']}/{r['proto']}  "
                      f"({r['flows']} flows)  {r['letters']}\n")
