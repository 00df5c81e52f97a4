"""The anatomy of a detector. Copy this shape for a new one (see detect/README.md).

A detector is a plain class: a name, its options (with defaults and help), the evidence kinds it
can emit, and up to three hooks. The engine builds its call lists once at start from which hooks a
detector overrides; a hook returns a list of Evidence (usually empty). Detectors never block and
never do I/O: they see flows, app events and the time they are given.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from slipsq.allow import AllowList
from slipsq.config import Config, Option
from slipsq.detect.inuse import ServersInUse, make_servers
from slipsq.detect.peers import Peers
from slipsq.detect.resolvers import Resolvers
from slipsq.flow import AppEvent, Flow
from slipsq.lru import new
from slipsq.records import Evidence


@dataclass
class Context:
    """What every detector may read: the config, the never-block list, the models, shared facts."""

    config: Config
    allow: AllowList
    models: Sequence[Any] = ()
    # ip -> domain names it was resolved from (filled by the engine from DNS answers)
    # (least recently answered first; bounded by dns.max_addresses through slipsq.lru.touch)
    dns_names: OrderedDict[str, set[str]] = field(default_factory=new)
    # local P2P hosts and their peers (filled by the p2p detector, read by beacon)
    peers: Peers = field(default_factory=Peers)
    # ip -> {country, asn, org}: GeoIP/ASN lookups for alerts (slipsq.enrich.make_enrichers); [] = none
    enrichers: list[Callable[[str], dict[str, Any]]] = field(default_factory=list)
    # non-local servers that answered local hosts, and when (fed and asked by detectors whose
    # evidence could be forged: portscan, reconnect; see detect/inuse.py)
    servers: ServersInUse = field(default_factory=make_servers)
    # whose DNS answers teach dns_names (detect/resolvers.py): built from config and allow
    resolvers: Resolvers = field(init=False)

    def __post_init__(self) -> None:
        self.resolvers = Resolvers(self.config["dns.trusted_resolvers"], self.allow)


NO_EVIDENCE: tuple[Evidence, ...] = ()  # immutable: safe to share between hooks


def report_due(count: Any, n: float, threat: float, again: bool = False) -> bool:
    """The detectors' rule for reporting a count again: when it first qualifies, when it doubles,
    or when its threat rises (`again`: whatever it was). `count` holds what was reported last
    (`emitted`, `emitted_threat`) and is updated when the answer is True."""
    if not again and count.emitted and n < 2 * count.emitted and threat <= count.emitted_threat:
        return False
    count.emitted, count.emitted_threat = n, threat
    return True


@dataclass(frozen=True, slots=True)
class FlowGate:
    """The flows a detector's `on_flow` can never act on, declared so the engine skips the call.

    Most detectors return at their first line for most flows (a long-connection detector for every
    short one); the call's Python frame was the cost. A flow passes when every condition that is set
    holds; for a flow that does not, the detector's `on_flow` must return NO_EVIDENCE and change
    nothing, so skipping it changes nothing (tests/test_dispatch.py holds each gated detector to
    it). The compiled dispatcher tests these in C and calls the detector whenever a field is not
    a plain float or int it can read; calling is always correct, skipping is the shortcut."""

    protos: frozenset[str] | None = None  # the flow's protocol is one of these (None: any)
    reports: bool = True  # False: not an active-timeout report (flow.is_report)
    min_dur: float = 0.0  # if set: flow.dur >= min_dur
    min_bytes: int = 0  # if set: flow.sbytes + flow.dbytes >= min_bytes
    answered: bool = False  # True: flow.dpkts != 0
    min_dport: int = 0  # if set: flow.dport >= min_dport
    skip_dports: frozenset[int] = frozenset()  # flow.dport is none of these

    def admits(self, flow: Flow) -> bool:
        """The definition the compiled dispatcher (slipsq/_dispatch.pyx) follows."""
        if self.protos is not None and flow.proto not in self.protos:
            return False
        if not self.reports and flow.is_report:
            return False
        if self.min_dur and flow.dur < self.min_dur:
            return False
        if self.min_bytes and flow.sbytes + flow.dbytes < self.min_bytes:
            return False
        if self.answered and flow.dpkts == 0:
            return False
        if self.min_dport and flow.dport < self.min_dport:
            return False
        return not (self.skip_dports and flow.dport in self.skip_dports)


class Detector:
    """Subclass and override the hooks you need (see detect/README.md).

    `app_kinds` names the app events `on_app` wants (slipsq.appdecode.APP_KINDS: "dns", "banner",
    "tls", "http", "arp", ...). The engine asks the flow table for the union of every detector's
    kinds plus "dns" (DNS answers fill ctx.dns_names), so a packet nobody wants is never decoded,
    and calls `on_app` only with the events of the kinds it names ("dns-queries" gives "dns" events,
    "payload" "banner", "tls", "http" and "tunnel" ones), from packets and from logs alike. A detector that
    names none gets every event. `flow_gate` likewise names the flows `on_flow` can act on (FlowGate).
    """

    name: ClassVar[str] = "base"
    options: ClassVar[tuple[Option, ...]] = ()
    evidence_kinds: ClassVar[tuple[str, ...]] = ()  # the kinds of finding, for docs and `slipsq detectors`
    app_kinds: ClassVar[frozenset[str]] = frozenset()  # app events on_app needs (the table hands up only these)
    # the flows on_flow can never act on (FlowGate); set in __init__ when it depends on options
    flow_gate: FlowGate | None = None

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.config

    def opt(self, key: str) -> Any:
        """This detector's own option `key` (declared as `<name>.<key>`)."""
        return self.cfg[f"{self.name}.{key}"]

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        """Called for every closed flow (and every active-timeout report: check flow.is_report)."""
        return NO_EVIDENCE

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        """Called for every decoded application event (DNS, TLS SNI, HTTP host, banners, ARP)."""
        return NO_EVIDENCE

    def on_tick(self, now: float) -> Sequence[Evidence]:
        """Called when time advances (at least once a second of flow time, and at end of input)."""
        return NO_EVIDENCE

    def overrides(self, hook: str) -> bool:
        return getattr(type(self), hook) is not getattr(Detector, hook)
