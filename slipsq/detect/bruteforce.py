"""Brute force detector: many short connections from one source to one login service.

A login service is known by its port (22 ssh, 3389 rdp, 21 ftp, 23 telnet, 445/139 smb, 3306 mysql,
5432 postgres, 1433 mssql, 5900 vnc, `bruteforce.ports`) or, for services moved off their port, by
the first bytes a server sends: the decoder's "banner" AppEvents name the service (ssh, ftp,
rdp, smb, telnet), and this detector remembers per (server, port) what it said (a client's bytes
name nothing of its server: anyone can send "SSH-2.0" to any port). It returns Evidence
only: it never blocks and never does I/O.

An attempt is a closed TCP connection to the service that the server took up and sent data on,
and the client too (`tcpstate.exchanged`), that lasted at most `bruteforce.max_duration` seconds:
password guessers open a connection, try a few passwords, get thrown out. Not counted: an
unanswered connection (a scan, counted by portscan); one whose handshake never completed (it proves
nothing of its source, whose address a forger may have used: SYNs sent as 8.8.8.8 would get 8.8.8.8
blocked); one whose client said nothing (a monitor's port check takes the banner and closes: 60 an
hour blocked the owner's own monitoring server). Attempts are counted per (source,
server, port) per judge window (index = int(flow start // judge.window)).

Arithmetic (n = attempts, T = `bruteforce.min_attempts`, default 20):
  threat = high for n >= T; critical for n >= 3 T, or for n >= T from an outside (non-local) source
           to a local server (an Internet host hammering a LAN login service)
  confidence = short connections / all connections of that source to that service in the window
               (a long interactive session among them lowers it)
  so 20 short logins from the Internet, or 60 from inside, score 1.0 and block by themselves; 20
  from inside score 0.8 and block with one more finding (e.g. the scan that found the server).
  Between two local hosts (VLANs the gateway routes) it is reported, never blocks, unless
  `bruteforce.local_may_block`: a Nextcloud opens a database connection per request, Home
  Assistant's ssh sensor logs in every minute, a camera uploads each snapshot to the NAS by FTP.
  Paced: a run is attempts each starting within `bruteforce.max_gap` (120 s) of the one before. When
  no run in the window reached T and the count is under 4 T, the count is made of short runs with
  pauses between them: a job on a schedule (the office's editor fetching 3 repositories of the home
  Gitea over ssh every 180 s is 60 logins an hour; a camera's FTP upload per motion event) or a
  guesser pacing itself. A flow cannot tell a login that worked from one that failed, so that is
  threat = medium (x confidence <= 0.5): reported each window, it blocks only with other evidence.
  A guesser that pauses 2 minutes after every 19 attempts gets at most 4 T - 1 (79) connections a
  window before it blocks (without the 4 T it got ~490 an hour: a review); a job with more than
  79 logins an hour blocks as before. Guessers (hydra, ncrack, bots) open connection after
  connection, seconds apart: one run.
  Inside sources get more room because admin automation (Ansible opens an ssh connection per task)
  looks like this too. From inside to a server a trusted resolver named (ctx.dns_names: github.com),
  it is reported low and never blocks: git over ssh (an editor's autofetch, every 180 s a repository)
  is exactly this, and a guesser from inside goes after addresses, not names.
  Why 20: people rarely open more than a handful of ssh/rdp connections an hour to one server, and
  mail pollers (IMAP/POP, which reconnect every few minutes) are not login services here.
Evidence is emitted when the count first reaches T, when it doubles, and when the threat rises.
The per-flow and per-event path and state (the tests, the counts, the banners) are `Intake`,
compiled as `_bruteforce.Intake` (slipsq.twins chooses): Python runs only to judge a count at T.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from slipsq import twins
from slipsq.config import Option, port_list, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, report_due
from slipsq.detect.prefixes import is_local, shared_space
from slipsq.detect.tcpstate import exchanged
from slipsq.flow import AppEvent, Flow
from slipsq.lru import new, put
from slipsq.records import CRITICAL, HIGH, LOW, MEDIUM, Evidence

DEFAULT_PORTS = {22: "ssh", 3389: "rdp", 21: "ftp", 23: "telnet", 445: "smb", 139: "smb", 3306: "mysql",
                 5432: "postgres", 1433: "mssql", 5900: "vnc", 5901: "vnc", 2323: "telnet"}
LOGIN_SERVICES = frozenset({"ssh", "rdp", "ftp", "telnet", "smb", "vnc"})


@dataclass(slots=True)
class _Count:
    first: float
    last: float = 0.0
    short: int = 0
    long: int = 0
    emitted: int = 0
    emitted_threat: float = 0.0
    run: int = 0  # short attempts in the current run (each within max_gap s of the one before)
    run_last: float = float("-inf")  # the latest start in that run
    longest: int = 0  # the longest run in the window


# what the intake hands a count that reached min_attempts: (service, (src, dst, port), count, flow) -> evidence
Judge = Callable[[str, tuple[str, str, int], _Count, Flow], Sequence[Evidence]]


class Intake:
    """The detector's per-flow and per-event path and state. `on_flow` answers NO_EVIDENCE for a
    report of a connection still open, a flow that is not TCP, one to no login service (its banner
    says so, else its port does) and one the server did not answer (a scan's, counted by portscan):
    most flows. The others are counted per (source, server, port) in the judge window of their
    start (`counts`, at most `max_keys` keys; a key first seen when full is not counted), and a
    short one whose count reached `min_n` goes to `judge`. `on_app` remembers what each banner says
    of its server (`banners`, at most `max_banners`, least recently seen first; every other event,
    a DNS answer, a ClientHello, keeps nothing). The readable twin of the compiled
    `_bruteforce.Intake` (make_intake chooses, tests/test_detect_compiled.py holds them equal)."""

    __slots__ = ("banners", "counts", "index", "judge", "max_banners", "max_dur", "max_gap", "max_keys", "min_n",
                 "ports", "window")

    def __init__(self, ports: dict[int, str], window: float, min_n: int, max_dur: float, max_keys: int,
                 max_banners: int, judge: Judge, max_gap: float = float("inf")) -> None:
        self.ports, self.window, self.min_n, self.max_dur, self.max_gap = ports, window, min_n, max_dur, max_gap
        self.max_keys, self.max_banners, self.judge = max_keys, max_banners, judge
        self.banners: OrderedDict[tuple[str, int], str] = new()  # (server, port) -> service
        self.counts: dict[tuple[str, str, int], _Count] = {}
        self.index = -1  # the judge window counted in

    def service(self, server: str, port: int) -> str | None:
        """The login service at (server, port): its banner says so, else its port does."""
        said = self.banners.get((server, port))
        if said is not None:
            return said if said in LOGIN_SERVICES else None
        return self.ports.get(port)

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        if flow.is_report or flow.proto != "tcp":
            return NO_EVIDENCE
        service = self.service(flow.daddr, flow.dport)
        if service is None or not exchanged(flow):
            return NO_EVIDENCE
        index = int(flow.start // self.window)
        if index > self.index:
            self.index, self.counts = index, {}
        key = (flow.saddr, flow.daddr, flow.dport)
        c = self.counts.get(key)
        if c is None:
            if len(self.counts) >= self.max_keys:
                return NO_EVIDENCE
            c = self.counts[key] = _Count(flow.start)
        c.last = max(c.last, flow.start)
        if flow.dur <= self.max_dur:
            c.short += 1
        else:
            c.long += 1
            return NO_EVIDENCE
        if flow.start - c.run_last > self.max_gap:  # a pause: a new run (flows close out of start order:
            c.run = 1                                # an earlier start continues the run)
        else:
            c.run += 1
        c.run_last = max(c.run_last, flow.start)
        c.longest = max(c.longest, c.run)
        if c.short < self.min_n:
            return NO_EVIDENCE
        return self.judge(service, key, c, flow)

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        # A first payload names the service of the end that sent it, and only that end. The table
        # hands up each direction's first payload, so a server's own bytes name it: ssh's and ftp's
        # greeting, telnet's negotiation, VNC's version, RDP's Connection Confirm, SMB's negotiate
        # response, an HTTP response on a login port (not that service after all). A client's bytes
        # name nothing of its server: one stranger's "SSH-2.0" (or RDP request, or HTTP request) sent
        # to a NAS's HTTPS port made every short connection of the owner's phone there a login
        # attempt (or made a brute force to port 22 uncounted). Another service on a port that is no
        # login port changes no answer of `service` (None either way), so it is not kept: every TLS
        # ClientHello would push login banners out.
        if event.kind != "banner":
            return NO_EVIDENCE
        service = event.data.get("service", "")
        if service in LOGIN_SERVICES or event.sport in self.ports:
            put(self.banners, (event.saddr, event.sport), service, self.max_banners)
        return NO_EVIDENCE


def make_intake(ports: dict[int, str], window: float, min_n: int, max_dur: float, max_keys: int, max_banners: int,
                judge: Judge, max_gap: float = float("inf")) -> Intake:
    """The compiled Intake, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._bruteforce")
    cls: type[Intake] = Intake if fast is None else fast.Intake
    return cls(ports, window, min_n, max_dur, max_keys, max_banners, judge, max_gap)


class BruteForce(Detector):
    name = "bruteforce"
    evidence_kinds = ("login-bruteforce",)
    # login banners (a server's greeting) name moved login services. HTTP requests on a login port
    # no longer say it is none: a client's bytes name nothing of its server (on_app), so they are
    # not asked for (a few per cent of first payloads; TLS, most of them, is not asked for either)
    app_kinds = frozenset({"banner"})
    options = (
        Option("bruteforce.min_attempts", 20, "short connections from one source to one login service in "
               "one judge window that make a brute force", positive, "> 0"),
        Option("bruteforce.max_duration", 30.0, "longest connection (s) counted as one login attempt",
               positive, "> 0", duration=True),
        Option("bruteforce.ports", [], "extra login service ports, e.g. [2222, 10022] (named by their banner "
               "when one is seen)", port_list, "a list of port numbers"),
        Option("bruteforce.max_gap", 120.0, "longest pause (s) between a source's short connections to a login "
               "service that keeps them one run of guessing; a count made only of shorter runs (a job every few "
               "minutes) is reported at medium threat and blocks only with other evidence",
               positive, "> 0", duration=True),
        Option("bruteforce.local_may_block", False, "a brute force between two local hosts (across VLANs the "
               "gateway routes) may block; off: reported, never blocks (a Nextcloud opening a database "
               "connection per request, Home Assistant's ssh sensor, a camera's FTP uploads to the NAS)"),
        Option("bruteforce.max_banners", 65_536, "login banners remembered per (server, port) (least "
               "recently seen forgotten first)", positive, "> 0"),
        Option("bruteforce.max_keys", 200_000, "(client, server, port) triples counted per judge window; "
               "a triple first seen when full is not counted", positive, "> 0"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.window: float = self.cfg["judge.window"]
        self.min_n: int = self.opt("min_attempts")
        self.max_dur: float = self.opt("max_duration")
        self.ports: dict[int, str] = dict(DEFAULT_PORTS)
        for p in self.opt("ports"):
            self.ports.setdefault(int(p), "login")
        self.max_gap: float = self.opt("max_gap")
        self.local_may_block: bool = self.opt("local_may_block")
        self.max_banners: int = self.opt("max_banners")
        self.max_keys: int = self.opt("max_keys")
        self.intake = make_intake(self.ports, self.window, self.min_n, self.max_dur, self.max_keys, self.max_banners,
                                  self._judge, self.max_gap)
        self.banners = self.intake.banners  # (server, port) -> what its banner said (the intake's)
        # the engine calls these once per flow and per app event: hand it the compiled path itself
        # (the Python frame of a method that only calls it would cost as much as the compiled tests)
        self.on_flow = self.intake.on_flow  # type: ignore[method-assign]
        self.on_app = self.intake.on_app  # type: ignore[method-assign]

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        return self.intake.on_app(event)  # (not called by the engine: see __init__)

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        return self.intake.on_flow(flow)  # (not called by the engine: see __init__)

    def service(self, server: str, port: int) -> str | None:
        """The login service at (server, port): its banner says so, else its port does."""
        return self.intake.service(server, port)

    def _judge(self, service: str, key: tuple[str, str, int], c: _Count, flow: Flow) -> Sequence[Evidence]:
        """A count of short connections that reached min_attempts (Intake.on_flow): evidence when it
        first does, when it doubles and when the threat rises."""
        n = c.short
        src, dst, port = key
        src_local, dst_local = is_local(src), is_local(dst)
        inbound = dst_local and not src_local
        threat = CRITICAL if n >= 3 * self.min_n or inbound else HIGH
        may_block = True
        # a house's client to a server a trusted resolver named for it: git fetching over ssh
        # (VS Code's autofetch, every 180 s a repository) is 60 short sessions an hour; a guesser
        # from inside goes after addresses, not names
        named = src_local and not dst_local and dst in self.ctx.dns_names
        # attempts paced minutes apart: a job on a schedule (an office's editor fetching from the home
        # Gitea every 180 s, a camera's FTP upload per motion event: logins that work, which a flow
        # cannot tell from failed ones) or a guesser pacing itself below what it takes to block
        paced = not named and c.longest < self.min_n and n < 4 * self.min_n
        # across VLANs the gateway routes: apps that log in per request or per minute (a Nextcloud's
        # database connections, Home Assistant's ssh sensor, a camera's FTP to the NAS) look like
        # this, and a worm guessing passwords inside is also scanning (portscan blocks that). CGNAT's
        # 100.64/10 is local to the other detectors, but a port-forwarded attacker on the same ISP
        # comes from there: no LAN here
        lan = src_local and dst_local and not shared_space(src) and not self.local_may_block
        if named:
            threat, may_block = LOW, False  # it weighs little beside the host's other findings
        elif paced:
            threat = MEDIUM  # x confidence <= 0.5: reported each window, blocks only with other evidence
        if lan:
            may_block = False
        if not report_due(c, n, threat):
            return NO_EVIDENCE
        conf = n / (n + c.long)
        desc = (f"{service} brute force from {src} to {dst}:{port}/tcp: {n} short connections "
                f"(<= {self.max_dur:g}s) in {c.last - c.first:.0f}s, {c.long} longer sessions")
        if paced:
            desc += (f"; paced: its longest run of attempts each within {self.max_gap:g}s of the one before "
                     f"is {c.longest} (< {self.min_n}): a scheduled job's logins (git over ssh, a camera's "
                     "FTP uploads) look like this, reported, blocks only with other evidence")
        if named:
            desc += (f"; {dst} is a named server ({', '.join(sorted(self.ctx.dns_names[dst])[:2])}): "
                     "automation (git over ssh) looks like this, reported low, never blocks")
        if lan:
            desc += "; both ends local: reported, never blocks (bruteforce.local_may_block)"
        ts = max(c.last, self.intake.index * self.window)  # a late flow of the last window counts in this one
        return [Evidence(ts=ts, detector=self.name, offender=src, src_ip=src, dst_ip=dst, dst_port=port,
                         proto="tcp", description=desc, threat_level=threat, confidence=round(conf, 3),
                         label=service, key=f"bruteforce:{src}:{dst}:{port}/tcp", flows=(flow,),
                         may_block=may_block)]
