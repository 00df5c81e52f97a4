"""Train a slipsq Markov-chain model from labeled traffic: one 4-tuple's letters become a model.

    python tools/train_model.py INPUT --tuple SRC,DST,PORT,PROTO --label From-Botnet-TCP-HTTP-CC-1 \
        [--threshold 1.1] [--variant classic] [--out models/]
    python tools/train_model.py INPUT --list [--min-flows 5]

INPUT is a packet capture (pcap/pcapng, replayed through slipsq's own flow table, so the letters
are the ones slipsq computes live) or any flow file slipsq reads (Argus binetflow CSV, Zeek
conn.log, Suricata eve.json, nfdump). The tuple is client IP, server IP, server port and protocol
(tcp or udp); `--list` shows the tuples of the input with their flows and letters, to pick one.
The whole string is kept (no length cap) and written as <out>/<label>.json with its provenance:
the input's name and sha256, the tuple, the number of flows, the letters variant.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from a checkout: find slipsq beside tools/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slipsq.config import Config
from slipsq.detect.stratosphere.detector import StratosphereDetector
from slipsq.detect.stratosphere.markov import Model, label_protocol, validate, write_model
from slipsq.engine import Engine
from slipsq.errors import SlipsqError
from slipsq.flow import Flow
from slipsq.replay import input_kind
from slipsq.runmode import all_options

UNCAPPED = {"stratosphere.max_letters": 1 << 30, "stratosphere.tuple_idle": 1e15,
            "stratosphere.max_tuples": 1 << 30}


class TrainError(SlipsqError):
    code = 2


def parse_tuple(text: str) -> tuple[str, str, int, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not parts[2].isdigit() or parts[3].lower() not in ("tcp", "udp"):
        raise TrainError(f"--tuple must be SRC,DST,PORT,PROTO (PROTO tcp or udp), not {text!r}")
    return parts[0], parts[1], int(parts[2]), parts[3].lower()


def tuples_of(path: str, variant: str = "classic") -> list[dict[str, Any]]:
    """Every 4-tuple of the input with its whole letter string (StratosphereDetector.tuples rows)."""
    cfg = Config(all_options(), {**UNCAPPED, "letters.variant": variant})
    engine = Engine(cfg, detectors=[StratosphereDetector])
    if input_kind(path, "auto") == "pcap":
        from slipsq.sources.pcap import replay_capture

        replay_capture(engine, path)
    else:
        from slipsq.sources.flowfiles import open_flow_source

        for item in open_flow_source(path):
            if isinstance(item, Flow):
                engine.flow(item)
    engine.finish()
    det = engine.detectors[0]
    assert isinstance(det, StratosphereDetector)
    return det.tuples()


def train(path: str, tup: tuple[str, str, int, str], label: str, threshold: float = 1.1,
          variant: str = "classic") -> Model:
    proto = label_protocol(label)
    if proto.lower() != tup[3]:
        raise TrainError(f"label {label!r} is for {proto or 'no protocol'}, the tuple is {tup[3]}")
    rows = [r for r in tuples_of(path, variant)
            if (r["src_ip"], r["dst_ip"], r["dst_port"], r["proto"]) == tup]
    if not rows:
        raise TrainError(f"{path}: no flows of {tup[0]} -> {tup[1]}:{tup[2]}/{tup[3]} "
                         f"(see --list for the tuples it has)")
    row = rows[0]
    data = Path(path).read_bytes()
    provenance = {
        "source": "trained with slipsq tools/train_model.py",
        "imported_from": None,
        "trained_on": Path(path).name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "tuple": f"{tup[0]}-{tup[1]}:{tup[2]}/{tup[3]}",
        "flows": row["flows"],
        "variant": variant,
    }
    return validate(Model(label, proto, row["letters"], float(threshold), provenance), f"model {label!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="pcap/pcapng or flow file (binetflow, Zeek conn.log, eve.json, nfdump)")
    ap.add_argument("--tuple", help="SRC,DST,PORT,PROTO of the behaviour to learn")
    ap.add_argument("--label", help="the model's label, e.g. From-Botnet-TCP-HTTP-CC-1 (3rd field TCP/UDP)")
    ap.add_argument("--threshold", type=float, default=1.1, help="largest distance that matches [1.1]")
    ap.add_argument("--variant", choices=("classic", "slips"), default="classic", help="letters variant")
    ap.add_argument("--out", default="models", help="folder to write the model into [models]")
    ap.add_argument("--list", action="store_true", help="list the input's 4-tuples and their letters")
    ap.add_argument("--min-flows", type=int, default=3, help="with --list: only tuples with this many flows")
    args = ap.parse_args(argv)
    try:
        if args.list:
            for r in tuples_of(args.input, args.variant):
                if r["flows"] >= args.min_flows:
                    print(f"{r['src_ip']},{r['dst_ip']},{r['dst_port']},{r['proto']}  {r['flows']:6} flows  "
                          f"{r['letters'][:70]}")
            return 0
        if not args.tuple or not args.label:
            raise TrainError("give --tuple and --label (or --list to see the tuples)")
        model = train(args.input, parse_tuple(args.tuple), args.label, args.threshold, args.variant)
        path = write_model(model, args.out)
    except SlipsqError as e:
        print(f"train_model: {e}", file=sys.stderr)
        return e.code
    print(f"{path}: {model.label}, {len(model.letters)} letters from {model.provenance['flows']} flows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
