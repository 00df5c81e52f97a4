"""DGA: one host asking for many random-looking domains that do not exist (NXDOMAIN bursts).

Malware with a domain generation algorithm looks for its C&C among hundreds of generated names a
day, of which only one or two are registered: its DNS answers are mostly NXDOMAIN, each for a
different, random-looking domain. Per client (the host a DNS response goes to) and judge window
(index = int(response time // judge.window)) it counts the distinct sites ("registered domains":
the last two labels, three under a ccTLD's co/com/net/org/ac/gov/edu) of NXDOMAIN answers whose
main label looks random. It returns Evidence only. The NXDOMAIN responses come as "dns" events
(the flow table hands them up with the answered ones; Zeek dns.log and Suricata give them too).

Looks random (a cheap lexical test, no model): the site's main label, '-' removed, has at least 8
characters and fewer than 20 % vowels among its letters, or a run of 5 consonants, or at least 3
digits strewn among the letters (3 letter-digit boundaries: "x7k2p9qmz", not "shop2024").
Uniformly random letters pass 60 % (8 letters) to 79 % (15 letters) of the time; 4 of 181 popular
and advertising sites do (appsflyer, crashlytics ...).

Arithmetic (n = random-looking NXDOMAIN sites in the window, T = `dga.nxdomains`, 10):
  threat     = medium for n >= T, high for n >= 3 T, critical for n >= 5 T
  confidence = 0.5 + 0.5 x min(1, n / 5 T)
  so 10 sites score 0.5 x 0.6 = 0.3 (an alert), 30 score 0.8 x 0.8 = 0.64, 50 score 1.0 and block
  by themselves. Evidence is emitted when n first reaches T, again when it doubles or the threat
  rises; one key per host. The offender is the client: the infected host (there is no server to
  block yet: the name that will answer is not known). A client that is not a private address (a
  transit host, an IPv6 LAN host) is reported, never blocked.

False-positive guards:
* A misconfigured search domain ("www.google.com.corp.example.net", "printer.home"): names that
  share a suffix fold into one site, and names under local suffixes (.local, .lan, .home,
  .internal, .localdomain, .corp, .arpa incl. reverse lookups ...) are not counted.
* Browsers' random-name probes: Chrome's three random 7-15 letter queries at start are single
  labels (no dot): single-label names are never counted.
* Ad and tracker blocking resolvers (Pi-hole, NextDNS answering NXDOMAIN): the blocked sites are
  real, word-like names; the randomness test keeps nearly all of them out.
* A resolver hiccup: only NXDOMAIN counts (SERVFAIL, refused, timeouts do not), and a site that
  then resolves for the same host in the same window is taken out of the count again.
* Forged answers (an off-path sender spraying NXDOMAINs at a host to get it blocked): the flow
  table hands up no answer that begins its flow (no query seen), and an answer counts only from a
  resolver on the local network, or one that gave this host a real answer (NOERROR with addresses)
  before; mDNS (5353) never counts. An attacker who also guesses the port of a query in flight
  can still forge one answer to it (so can anyone against DNS itself).
Not caught: DGAs of dictionary words (Suppobox, Matsnu: they read like trackers), a DGA under a
dynamic-DNS or cloud suffix (all its names fold into one site), a slow DGA (under T per window),
and DNS the gateway cannot see (DNS over HTTPS, the gateway's own resolver when its traffic is not
diverted to slipsq).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Container, Sequence

from slipsq import twins
from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, report_due
from slipsq.detect.prefixes import is_local
from slipsq.flow import AppEvent
from slipsq.lru import Nested, new, put, touch
from slipsq.records import CRITICAL, HIGH, MEDIUM, Evidence

NXDOMAIN = 3
LOCAL_SUFFIXES = ("local", "lan", "home", "internal", "intranet", "localdomain", "corp", "private", "arpa",
                  "localhost", "test", "invalid", "example", "domain", "router", "fritz.box", "box")
_CC_SECOND = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "or", "ne", "go", "gob", "mil", "nic"})
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{5}")
_MIXED = re.compile(r"[a-z][0-9]|[0-9][a-z]")  # letter-digit boundaries
_MAX_HOSTS = 65_536
_MAX_SITES = 4096  # per host per window (a DGA is judged long before); dga.max_total_sites bounds them all
_MAX_RESOLVERS = 65_536


def site(name: str) -> str:
    """The registered domain of a name, approximately (no public-suffix list: a wrong guess only
    folds two sites into one or splits one in two)."""
    labels = name.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _CC_SECOND:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def looks_random(label: str) -> bool:
    """The lexical test of the module docstring on a site's main label."""
    s = label.replace("-", "")
    n = len(s)
    if n < 8:
        return False
    letters = sum(1 for c in s if c.isalpha())
    vowels = sum(1 for c in s if c in "aeiou")
    if vowels < 0.2 * letters or _CONSONANT_RUN.search(s) is not None:
        return True
    # digits strewn among letters ("x7k2p9qmz"), not a number beside a word ("shop2024", "365scores")
    return n - letters >= 3 and len(_MIXED.findall(s)) >= 3


class Intake:
    """The detector's per-answer path: what every DNS event costs. Not DNS or not from port 53:
    nothing. A real answer (NOERROR with addresses): its resolver is one this client uses (refreshed
    at most every 300 s), and a site counted for the client is handed to `resolved(client, query)`.
    Another error than NXDOMAIN: nothing. NXDOMAIN: `nxdomain(event)` judges it. The readable twin
    of the compiled `_dns.DgaIntake` (make_intake chooses, tests/test_detect_compiled.py holds them
    equal). `resolvers` and `sites` (the Nested's outer map) are the detector's own, shared."""

    __slots__ = ("nxdomain", "resolved", "resolvers", "sites")

    def __init__(self, resolvers: OrderedDict[tuple[str, str], float], sites: Container[str],
                 resolved: Callable[[str, object], None],
                 nxdomain: Callable[[AppEvent], Sequence[Evidence]]) -> None:
        self.resolvers, self.sites, self.resolved, self.nxdomain = resolvers, sites, resolved, nxdomain

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        if event.kind != "dns" or event.sport != 53:
            return NO_EVIDENCE
        data = event.data
        rcode = data.get("rcode")
        if rcode == 0:
            if data.get("answers"):
                client = event.daddr
                key = (client, event.saddr)
                last = self.resolvers.get(key)
                if last is None or event.ts > last + 300.0:
                    put(self.resolvers, key, event.ts, _MAX_RESOLVERS)
                if client in self.sites:  # it resolves after all: a hiccup, not a DGA name
                    self.resolved(client, data.get("query", ""))
            return NO_EVIDENCE
        if rcode != NXDOMAIN:
            return NO_EVIDENCE
        return self.nxdomain(event)


def make_intake(resolvers: OrderedDict[tuple[str, str], float], sites: Container[str],
                resolved: Callable[[str, object], None], nxdomain: Callable[[AppEvent], Sequence[Evidence]]) -> Intake:
    """The compiled intake, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._dns")
    cls: type[Intake] = Intake if fast is None else fast.DgaIntake
    return cls(resolvers, sites, resolved, nxdomain)


class WindowCount:
    """One client's count in its judge window and what was reported of it: the arithmetic of the
    DNS detectors (this one's sites, dnstunnel's names), the same in both (the module docstrings)."""

    __slots__ = ("emitted", "emitted_threat", "first", "index", "last", "names")

    def __init__(self) -> None:
        self.index = -1
        self.names = 0  # answers counted (all names, repeats too: for the description)
        self.emitted = 0
        self.emitted_threat = 0.0
        self.first = self.last = 0.0

    def seen(self, ts: float, window: float) -> bool:
        """One more answer at `ts`; True when it opened a new window (the caller forgets its names)."""
        index = int(ts // window)
        new = index > self.index
        if new:
            self.index, self.names, self.emitted, self.emitted_threat, self.first = index, 0, 0, 0.0, ts
        self.names += 1
        self.last = ts
        return new

    def report(self, n: int, t: int) -> tuple[float, float] | None:
        """(threat, confidence) of n distinct names or sites against T: medium at T, high at 3 T,
        critical at 5 T; 0.5 + 0.5 x min(1, n / 5 T). None below T, and when reported at this level
        already: again when n doubles or the threat rises."""
        if n < t:
            return None
        threat = CRITICAL if n >= 5 * t else HIGH if n >= 3 * t else MEDIUM
        if not report_due(self, n, threat):
            return None
        return threat, 0.5 + 0.5 * min(1.0, n / (5 * t))


def client_finding(detector: str, event: AppEvent, desc: str, level: tuple[float, float],
                   label: str) -> list[Evidence]:
    """The DNS detectors' evidence (this one's, dnstunnel's): against the client a DNS answer went to
    (`event.daddr`), from its resolver, one finding a client (`<detector>:<client>`), `level` from
    WindowCount.report. A client that is not local is reported, never blocked."""
    client = event.daddr
    threat, confidence = level
    may_block = is_local(client)
    if not may_block:
        desc += f"; {client} is not a local address (a private range or network.local): reported, never blocks"
    return [Evidence(ts=event.ts, detector=detector, offender=client, src_ip=client, dst_ip=event.saddr,
                     dst_port=53, proto=event.proto, description=desc, threat_level=threat,
                     confidence=round(confidence, 3), label=label, key=f"{detector}:{client}", may_block=may_block)]


class DGA(Detector):
    name = "dga"
    evidence_kinds = ("dga",)
    app_kinds = frozenset({"dns"})
    options = (
        Option("dga.nxdomains", 10, "random-looking NXDOMAIN sites one host asked for in one window before it "
               "is reported; 3x is high, 5x critical", positive, "> 0"),
        Option("dga.max_total_sites", 65_536, "random-looking NXDOMAIN sites remembered over all hosts (the "
               "least recently active hosts' are forgotten first)", positive, "> 0"),
        Option("dga.local_suffixes", list(LOCAL_SUFFIXES), "names ending with one of these are never counted "
               "(search domains, reverse lookups)"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.window: float = self.cfg["judge.window"]
        self.t: int = self.opt("nxdomains")
        self.local_suffixes = tuple("." + s.lower().strip(".") for s in self.opt("local_suffixes"))
        self.hosts: OrderedDict[str, WindowCount] = OrderedDict()
        # host -> {random-looking NXDOMAIN site: one name asked under it}, in this host's window
        self.sites: Nested[str, str, str] = Nested(_MAX_HOSTS, _MAX_SITES, self.opt("max_total_sites"))
        self.resolvers: OrderedDict[tuple[str, str], float] = new()  # (client, resolver) -> last real answer
        self.intake = make_intake(self.resolvers, self.sites.maps, self._resolved, self._nxdomain)
        # the engine calls on_app for every DNS answer: hand it the intake itself (no Python frame
        # for the answers that only refresh a resolver, nearly all of them)
        self.on_app = self.intake.on_app  # type: ignore[method-assign]

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        return self.intake.on_app(event)  # (not called by the engine: see __init__)

    def _resolved(self, client: str, query: object) -> None:
        """A real answer for `client`, which has NXDOMAIN sites counted: the site of `query` is no
        DGA name after all (a resolver hiccup), so it leaves the count."""
        self.sites.pop(client, site(str(query)))

    def _nxdomain(self, event: AppEvent) -> Sequence[Evidence]:
        """An NXDOMAIN answer from port 53 (the intake let it through): count it if it looks random."""
        data = event.data
        client, resolver = event.daddr, event.saddr
        name = str(data.get("query", "")).rstrip(".")
        if "." not in name or name.endswith(self.local_suffixes):
            return NO_EVIDENCE
        s = site(name)
        if not looks_random(s.partition(".")[0]):
            return NO_EVIDENCE
        if not is_local(resolver) and (client, resolver) not in self.resolvers:
            return NO_EVIDENCE  # an answer from a resolver this host never used: maybe forged
        h = touch(self.hosts, client, WindowCount, _MAX_HOSTS)
        if h.seen(event.ts, self.window):
            self.sites.clear(client)
        sites = self.sites.touch(client)
        if s in sites or len(sites) >= _MAX_SITES:
            return NO_EVIDENCE
        self.sites.put(client, s, name)
        n = len(sites)
        level = h.report(n, self.t)
        if level is None:
            return NO_EVIDENCE
        sample = ", ".join(list(sites.values())[-3:])
        desc = (f"DGA-like DNS from {client}: {n} random-looking domains that do not exist (NXDOMAIN) in "
                f"{h.last - h.first:.0f}s, e.g. {sample}")
        return client_finding(self.name, event, desc, level, "dga")
