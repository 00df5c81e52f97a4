"""nfdump binary files, read through the `nfdump` program (Debian package nfdump, version 1.7).

The program prints each record with a fixed field list (`-o fmt:`), plain numbers (`-N`), full IPv6
addresses (`-6`), and no header or summary (`-q`):

    nfdump -q -N -6 -r FILE -o 'fmt:%tsr,%td,%pr,%sa,%sp,%da,%dp,%ipkt,%ibyt,%opkt,%obyt,%flg,%stos,%dtos'

start (epoch seconds, ms), duration (s), protocol number, source address and port, destination address
and port, packets and bytes in and out, TCP flags (→ state), source and destination TOS.
Not `-o csv` (its times are local time, whole seconds) and not `%ter` (nfdump 1.7.1 prints the
milliseconds of the start there); the end is start + duration. NetFlow records are usually one
direction each: such a record is a flow whose d-side counts are 0, as nfdump gives them.
ICMP: nfdump prints `type.code` as the destination port; the flow gets sport = type, dport = code.

This module runs nfdump and reads its output as it comes; it never parses the binary format itself.
A missing nfdump program is an InputError that says so; whatever nfdump prints on stderr while it
exits 0 (a file cut short) is damage, reported after the results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from slipsq.errors import InputError
from slipsq.flow import Flow, proto_name
from slipsq.sources.flowfiles.base import ICMP, Addresses, FlowSource, Item, count, finite, port, row_error

FIELDS = "%tsr,%td,%pr,%sa,%sp,%da,%dp,%ipkt,%ibyt,%opkt,%obyt,%flg,%stos,%dtos"
NCOLS = FIELDS.count(",") + 1


def nfdump_command(path: str) -> list[str]:
    program = shutil.which("nfdump")
    if program is None:
        raise InputError(f"{path}: is an nfdump file, and reading it needs the nfdump program, which is not "
                         "installed or not on PATH (Debian package: nfdump)")
    return [program, "-q", "-N", "-6", "-r", path, "-o", f"fmt:{FIELDS}"]


class NfdumpSource(FlowSource):
    format = "nfdump"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.command = nfdump_command(path)
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: cannot open: permission denied or missing")

    def _items(self) -> Iterator[Item]:
        counts = self.counts
        addr = Addresses()
        with tempfile.TemporaryFile() as err:
            # stderr to a file: a pipe nobody reads could fill up and stall nfdump
            proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace")
            assert proc.stdout is not None
            try:
                lineno = 0
                for line in proc.stdout:
                    lineno += 1
                    if not line.strip() or line.strip() == "No matching flows":
                        continue  # nfdump says so of a file with no flows (empty, or cut before any)
                    counts["rows"] += 1
                    try:
                        flow = self._flow(line.split(","), addr)
                    except (ValueError, IndexError, OverflowError) as e:
                        self.bad(lineno, row_error(e))
                        continue
                    counts["flows"] += 1
                    yield flow
                code = proc.wait()
            finally:
                if proc.poll() is None:  # the reader stopped early
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            err.seek(0)
            why = [ln.strip() for ln in err.read(2000).decode("utf-8", "replace").splitlines() if ln.strip()]
            if code != 0:
                raise InputError(f"{self.name}: nfdump failed (exit {code}): "
                                 f"{why[-1] if why else 'no message'}")
            if why:
                # nfdump exits 0 on a file cut short ("Short read", "appendix offset error"), having
                # printed what it could: its complaint is the only sign that records were lost
                self.broken = "nfdump reported: " + " / ".join(why[:3])

    @staticmethod
    def _flow(f: list[str], addr: Addresses) -> Flow:
        if len(f) != NCOLS:
            raise ValueError(f"{len(f)} fields, expected {NCOLS}")
        start = finite(f[0].strip(), "start", 1e11)
        end = start + finite(f[1].strip(), "duration", 1e9)
        p = f[2].strip()
        proto = proto_name(int(p)) if p.isdigit() else p.lower()
        saddr, daddr = addr(f[3].strip()), addr(f[5].strip())
        dp = f[6].strip()
        if proto in ICMP and "." in dp:
            t, _, c = dp.partition(".")
            sport, dport = port(t), port(c)
        else:
            sport, dport = port(f[4].strip()), port(dp)
        return Flow(start, end, proto, saddr, sport, daddr, dport,
                    count(f[7].strip(), "packets"), count(f[9].strip(), "packets"),
                    count(f[8].strip(), "bytes"), count(f[10].strip(), "bytes"),
                    f[11].strip(), "->", count(f[12].strip(), "tos"), count(f[13].strip(), "tos"), "", "file")
