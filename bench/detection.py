"""Detection harness: replays a labeled corpus with default settings and prints, per scenario and in
total, who was blocked, alerted, missed or wrongly blocked, and the time to block.

    python bench/detection.py [--quick] [--only NAME,...] [--json] [--keep DIR]

The corpus: the generated scenarios of tools/gen_corpus.py (packet captures, replayed through the
compiled flow table exactly as `slipsq replay -o DIR` does, with default settings or the few a
scenario's `extra["config"]` gives, e.g. the IPv6 LAN's `network.local`) and the real files in ../shared/data
(or $SLIPSQ_SHARED_DATA) with the truths their README gives; absent files are skipped.

Per scenario: `bad` are the addresses whose block is right (the infected host, its C&C, the
attacker). Outcome BLOCKED when one of them was blocked, ALERTED when only alerts named one,
MISSED otherwise. `wrong` counts blocked addresses that are not bad (every block in a benign
scenario is wrong). `ttb` is the flow time from the start of the behaviour to the first right
block. `found by` lists the detectors whose evidence named a bad address (the decisive one first),
`expected` the detectors the scenario is meant for. The goal: every malicious scenario BLOCKED, no
wrong block anywhere. Benign scenarios slipsq is known to block (`extra["known_fp"]`: open
problems, kept in sight) are counted on a line of their own and do not fail the run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import gen_corpus  # noqa: E402

SHARED = Path(os.environ.get("SLIPSQ_SHARED_DATA") or ROOT.parent / "shared" / "data")
# the real files and what their README says of them (scanners found in the files themselves)
SHARED_CASES: list[tuple[str, str, frozenset[str], tuple[str, ...]]] = [
    ("flows/ctu-normal-2013-10-21.binetflow", "benign", frozenset(), ()),
    ("pcaps/test7-malicious.pcap", "malicious", frozenset({"192.168.2.16"}), ("portscan",)),
    ("pcaps/test12-icmp-portscan.pcap", "malicious", frozenset({"192.168.1.109"}), ("portscan",)),
    ("flows/test11-portscan.binetflow", "malicious", frozenset({"10.8.0.69"}), ("portscan",)),
    ("zeek/port-scan-horizontal/conn.log", "malicious", frozenset({"10.0.2.112"}), ("portscan",)),
]


@dataclass
class Result:
    name: str
    kind: str
    bad: frozenset[str]
    expected: tuple[str, ...]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    start: float | None = None
    known_fp: str = ""  # a benign scenario slipsq is known to block (gen_corpus.KNOWN_FP): listed apart

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["action"] == "block"]

    @property
    def blocked(self) -> list[str]:
        return sorted({a["blocked_ip"] for a in self.blocks})

    @property
    def right(self) -> list[str]:
        return [ip for ip in self.blocked if ip in self.bad]

    @property
    def wrong(self) -> list[str]:
        return [ip for ip in self.blocked if ip not in self.bad]

    def names_bad(self, a: dict[str, Any]) -> bool:
        return bool({a["offender"], a["src_ip"], a["dst_ip"]} & self.bad)

    @property
    def outcome(self) -> str:
        if self.kind != "malicious":
            return "-"
        if self.right:
            return "BLOCKED"
        return "ALERTED" if any(self.names_bad(a) for a in self.alerts) else "MISSED"

    @property
    def ttb(self) -> float | None:
        ts = [a["ts"] for a in self.blocks if a["blocked_ip"] in self.bad]
        return min(ts) - self.start if ts and self.start is not None else None

    @property
    def found_by(self) -> list[str]:
        first = [a["detector"] for a in self.blocks if a["blocked_ip"] in self.bad][:1]
        rest = sorted({a["detector"] for a in self.alerts if self.names_bad(a)} - set(first))
        return first + rest

    def row(self) -> dict[str, Any]:
        return {"scenario": self.name, "kind": self.kind, "outcome": self.outcome, "blocked": self.right,
                "wrong": self.wrong, "alerts": len(self.alerts),
                "alerts_on_others": len([a for a in self.alerts if not self.names_bad(a)]),
                "ttb_s": None if self.ttb is None else round(self.ttb, 1), "found_by": self.found_by,
                "expected": list(self.expected)}


def replay(path: Path, out: Path, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`slipsq replay PATH -o OUT` with default settings, or with `config` ({"section.key": value},
    written as the TOML file the replay reads); the alerts it wrote."""
    from slipsq.config import flat_toml
    from slipsq.replay import ReplayOptions, run_replay

    config_path = None
    if config:
        config_path = out.parent / f"{out.name}.toml"
        config_path.write_text(flat_toml(config))
    run_replay(ReplayOptions(inputs=[str(path)], as_json=True, out_dir=str(out),
                             config_path=None if config_path is None else str(config_path)), io.StringIO())
    with (out / "alerts.jsonl").open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def run_scenario(s: gen_corpus.Scenario, where: Path, config: dict[str, Any] | None) -> Result:
    """Scenario `s` written as a capture into `where` and replayed with `config` (run_corpus gives
    its `extra["config"]`; a test may give other settings, or None for the defaults)."""
    cap = where / f"{s.name}.pcap"
    gen_corpus.write(s, cap)
    return Result(s.name, s.kind, s.bad, s.detectors, replay(cap, where / "out", config), s.start + 10,
                  str(s.extra.get("known_fp", "")))


def run_corpus(quick: bool = False, only: set[str] | None = None, keep: Path | None = None,
               shared: bool = True) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = keep or Path(tmp)
        for s in gen_corpus.SCENARIOS:
            if (quick and not s.quick) or (only and s.name not in only):
                continue
            d = base / s.name
            d.mkdir(parents=True, exist_ok=True)
            results.append(run_scenario(s, d, s.extra.get("config")))  # type: ignore[arg-type]
        if shared and SHARED.is_dir():
            for rel, kind, bad, expected in SHARED_CASES:
                name = "shared:" + rel.split("/")[-1] if "conn.log" not in rel else "shared:" + rel
                path = SHARED / rel
                if not path.is_file() or (only and name not in only) or quick:
                    continue
                d = base / name.replace("/", "_").replace(":", "_")
                d.mkdir(parents=True, exist_ok=True)
                results.append(Result(name, kind, bad, expected, replay(path, d)))
    return results


def table(results: list[Result]) -> str:
    head = (f"{'scenario':30} {'kind':9} {'outcome':8} {'blocked':22} {'wrong':5} {'alerts':>6} {'ttb':>8}  "
            "found by / expected")
    lines = [head, "-" * len(head)]
    for r in results:
        ttb = "" if r.ttb is None else f"{r.ttb:.0f}s"
        lines.append(f"{r.name:30} {r.kind:9} {r.outcome:8} {','.join(r.right)[:22]:22} {len(r.wrong):5} "
                     f"{len(r.alerts):6} {ttb:>8}  {'+'.join(r.found_by) or '-'} / {'+'.join(r.expected) or '-'}")
        if r.wrong:
            lines.append(f"{'':30} wrongly blocked: {', '.join(r.wrong)}" + (" (KNOWN, open)" if r.known_fp else ""))
    mal = [r for r in results if r.kind == "malicious"]
    ben = [r for r in results if r.kind == "benign" and not r.known_fp]
    known = [r for r in results if r.known_fp]
    count = {o: sum(r.outcome == o for r in mal) for o in ("BLOCKED", "ALERTED", "MISSED")}
    ttbs = sorted(r.ttb for r in mal if r.ttb is not None)
    lines += ["", f"malicious: {count['BLOCKED']}/{len(mal)} blocked, {count['ALERTED']} alerted only, "
              f"{count['MISSED']} missed; wrongly blocked in them: {sum(len(r.wrong) for r in mal)}"
              + (f"; time to block median {ttbs[len(ttbs) // 2]:.0f}s, max {ttbs[-1]:.0f}s" if ttbs else ""),
              f"benign:    {sum(not r.wrong for r in ben)}/{len(ben)} block no one; wrongly blocked IPs: "
              f"{sum(len(r.wrong) for r in ben)}; alerts: {sum(len(r.alerts) for r in ben)}"]
    if known:
        lines.append(f"known wrong blocks (open problems, gen_corpus.KNOWN_FP): "
                     f"{sum(bool(r.wrong) for r in known)}/{len(known)} still block: "
                     + ", ".join(r.name for r in known if r.wrong))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the fast subset only (as the test runs)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--json", action="store_true", help="one JSON object per scenario")
    ap.add_argument("--keep", default=None, help="keep captures and replay outputs in this folder")
    args = ap.parse_args(argv)
    only = {n for n in args.only.split(",") if n} or None
    results = run_corpus(args.quick, only, Path(args.keep) if args.keep else None)
    if args.json:
        for r in results:
            print(json.dumps(r.row()))
    else:
        print(table(results))
    ok = all(r.outcome == "BLOCKED" for r in results if r.kind == "malicious") and not any(
        r.wrong for r in results if not r.known_fp)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
