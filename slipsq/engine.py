"""The engine: flow table → detectors → judge, returning what was decided. Sans-io: it opens no
socket, reads no clock and no file, and calls nothing that does. Sources hand it packets (through its
flow table) or flows, with their time; every input method returns the commands that follow from it
(slipsq.records: Alert, Block, Unblock, closed Flows when `export_flows`, DNS answers as Query when
`export_queries`), in decision order, for the caller to carry out: replay writes them at once
(runmode.Offline), the daemon hands each batch to its worker thread (one ipset batch, one store
transaction) so the packet loop never waits on I/O.

    source ──packets──► table.feed() ─ closed flows, app packets ─► drain() ─► detectors ─► judge ─► commands
    source ──flows────► flow() ─────────────────────────────────────────────► detectors ─► judge ─► commands

The per-packet work (parse, flow update, blocked-IP check) happens inside the compiled flow table;
Python runs only when a flow closes, an app packet needs deep parsing, or time advances. A block
takes effect in the table at once (its packets are dropped from the next packet on); the command
only carries it to the kernel and the store.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from slipsq import twins
from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.detect import DETECTORS
from slipsq.detect.base import Context, Detector
from slipsq.detect.prefixes import set_site_networks
from slipsq.dispatch import make_app_calls, make_flow_calls, steps_for
from slipsq.flow import AppEvent, Flow
from slipsq.judge import Judge
from slipsq.lru import trim
from slipsq.records import Alert, Block, Command, Decision, Evidence, Unblock

# the event kinds each app kind a detector may declare gives (appdecode.APP_KINDS: "dns-queries" asks
# the table for DNS queries too, whose events are "dns" ones; "payload" for every first payload)
_EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "dns": ("dns",), "dns-queries": ("dns",), "banner": ("banner",), "tls": ("tls",), "http": ("http",),
    "arp": ("arp",), "tunnel": ("tunnel",), "payload": ("banner", "tls", "http", "tunnel")}
_ALL_EVENT_KINDS = tuple(dict.fromkeys(k for kinds in _EVENT_KINDS.values() for k in kinds))


def make_table(config: Config) -> Any:
    """The compiled flow table, or its pure-Python twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq._flowtable")
    if fast is None:
        from slipsq.flowtable import FlowTable

        return FlowTable(config)
    return fast.FlowTable(config)


def make_app_decoder() -> Callable[[bytes, float], list[AppEvent]]:
    """The compiled decoder of handed-up app packets (slipsq._appdecode), or its readable twin
    `decode.app_events` (slipsq.twins decides)."""
    fast = twins.compiled("slipsq._appdecode")
    if fast is None:
        from slipsq.decode import app_events

        return app_events
    decoder: Callable[[bytes, float], list[AppEvent]] = fast.app_events
    return decoder


def tune_gc() -> None:
    """Cycle-collector settings for a process whose work is an Engine (the CLI's replay and daemon).

    The pipeline makes almost no reference cycles (refcounting frees its objects), but it allocates
    small objects per flow and keeps large long-lived detector state. With CPython's default
    thresholds (700, 10, 10) the collector walks that state again and again: about 20 % of replay
    CPU on bench/replay.py's capture. So: collect once, freeze what start-up made (modules, models,
    config) out of later collections, and run a young collection every 50,000 net allocations.
    Cycles are still collected; only less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@dataclass
class Counters:
    flows: int = 0
    app_events: int = 0
    alerts: int = 0  # one per piece of evidence
    blocks: int = 0


def make_counters() -> Counters:
    """The engine's counters: the compiled twin (slipsq._dispatch.Counters, whose numbers the
    compiled calls add to in C) when the build has it, else the dataclass; the same fields."""
    fast = twins.compiled("slipsq._dispatch")
    return Counters() if fast is None else cast(Counters, fast.Counters())


class Engine:
    def __init__(self, config: Config, *, models: Sequence[Any] = (), allow: AllowList | None = None,
                 detectors: Sequence[type[Detector]] | None = None, table: Any = None,
                 enrichers: Sequence[Callable[[str], dict[str, Any]]] = (), export_flows: bool = False,
                 on_error: Callable[[str, Exception], None] | None = None, export_queries: bool = False) -> None:
        """`export_flows`: also return every closed flow (not active-timeout reports) as a command,
        for flow writers; `export_queries`: also every DNS answer as a Query (the activity log).
        `on_error`: None (replay, tests) lets an exception from a detector or the app decoder
        propagate: a bug must be loud. Given (the daemon), such an exception is handed to
        on_error(what failed, exception) to count and report, and only that one call's result is
        lost: the other detectors still see the flow, the rest of the batch is analysed."""
        self.on_error = on_error
        self.export_flows = export_flows
        self.export_queries = export_queries
        self._out: list[Command] = []  # what was decided since the last take()
        self.table = table if table is not None else make_table(config)
        self._app_events = make_app_decoder()
        self.counters = make_counters()
        self.now = 0.0
        self._next_tick = 0.0
        self._detector_classes = DETECTORS if detectors is None else detectors
        self._lan: tuple[str, ...] = ()  # the gateway's LAN networks (follow_lan), local with network.local
        self._configure(config, models, allow, enrichers)

    def _configure(self, config: Config, models: Sequence[Any], allow: AllowList | None,
                   enrichers: Sequence[Callable[[str], dict[str, Any]]], dns_names: Any = None) -> None:
        """`dns_names`: the names learnt so far (a reload's), in the context before any detector is
        made: a detector may hold the map itself (portscan's compiled path does). All or nothing: when
        a detector cannot be made (a threat-intelligence list it cannot read), the error is raised
        with the engine as it was, so a reload that fails keeps the running configuration whole."""
        before = dict(self.__dict__)  # (every attribute: no list of what _build sets to keep in step)
        try:
            self._build(config, models, allow, enrichers, dns_names)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            if "config" in before:
                self._set_site()  # the site networks of the configuration kept
            raise

    def _build(self, config: Config, models: Sequence[Any], allow: AllowList | None,
               enrichers: Sequence[Callable[[str], dict[str, Any]]], dns_names: Any) -> None:
        self.config = config
        self._set_site()  # before the detectors: they ask is_local
        self.allow = allow or AllowList(config["allow.ips"])
        self.ctx = Context(config, self.allow, models, enrichers=list(enrichers))
        if dns_names is not None:
            self.ctx.dns_names = dns_names
        self.detectors = [cls(self.ctx) for cls in self._detector_classes]
        if dns_names is not None:
            trim(dns_names, config["dns.max_addresses"])  # the bound may be smaller now
        # call lists built once (slipsq/dispatch.py, compiled): no per-flow getattr or dispatch by name;
        # each on_flow hook past its FlowGate
        calls = partial(make_flow_calls, evidence=self._evidence, failed=self._failed)
        self._flows = calls([(d.on_flow, d.flow_gate) for d in self.detectors if d.overrides("on_flow")])
        # app events by kind: a detector is called only for the kinds it declares (a DNS answer
        # used to cost every on_app detector a Python call that returned at its first line)
        listeners = [d for d in self.detectors if d.overrides("on_app")]
        on_app = {kind: calls([(d.on_app, None) for d in listeners if not d.app_kinds
                               or any(kind in _EVENT_KINDS.get(k, ()) for k in d.app_kinds)])
                  for kind in _ALL_EVENT_KINDS}
        on_any_app = calls([(d.on_app, None) for d in listeners])  # a kind none of these names
        self._max_dns: int = config["dns.max_addresses"]
        self._apps = make_app_calls(on_app, on_any_app, self._app_events, self.ctx, self._max_dns, self._failed,
                                    config["dns.max_names"])
        self._on_tick = calls([(d.on_tick, None) for d in self.detectors if d.overrides("on_tick")])
        self._run_steps = steps_for(self._flows, self._apps)
        self.judge = Judge(config, self.allow)
        # the table hands up only packets someone decodes: DNS answers (ctx.dns_names) and what
        # the detectors declare
        self.table.set_app_kinds(frozenset({"dns"}).union(*(d.app_kinds for d in self.detectors)))

    def reconfigure(self, config: Config, models: Sequence[Any], allow: AllowList,
                    enrichers: Sequence[Callable[[str], dict[str, Any]]] = ()) -> None:
        """A reload (SIGHUP): new config, allow list, models and detectors. Kept: the flow table, the
        judge's blocks, repeat counts and evidence windows, DNS names, counters. Detectors start
        afresh (their options may have changed), so a half-seen beacon is seen again from zero."""
        old_judge = self.judge
        self._configure(config, models, allow, enrichers, self.ctx.dns_names)
        self.judge.take_state(old_judge)

    def follow_lan(self, networks: Sequence[str]) -> None:
        """The gateway's LAN networks, as the daemon reads them (`network.follow_lan`): local to every
        detector from now on, with `network.local`, until the next call. Answers cached for the
        networks before are forgotten; the detectors' state stays."""
        self._lan = tuple(networks)
        self._set_site()

    def _set_site(self) -> None:
        """What is local to every detector besides the private ranges: network.local and the LAN's."""
        set_site_networks([*self.config["network.local"], *self._lan])

    @property
    def local_networks(self) -> dict[str, list[str]]:
        """What is local besides the private ranges: the config's networks, and the LAN's followed."""
        return {"config": list(self.config["network.local"]), "lan": list(self._lan)}

    # --- inputs: each returns the commands it led to ------------------------------------------
    def take(self) -> list[Command]:
        """The commands decided since the last call, in decision order (and forget them here)."""
        out, self._out = self._out, []
        return out

    def packet(self, buf: bytes, ts: float, linktype: int) -> int:
        """One packet (the reference path, one Python call per packet; the fast sources call the
        table directly and then `advance`). Returns the table's verdict: 1 accept, 0 drop; the
        commands wait for the next `take()` or `advance()`."""
        verdict: int = self.table.feed(buf, ts, linktype)
        if self.table.pending or ts >= self._next_tick:
            self._advance(ts)
        return verdict

    def flow(self, flow: Flow) -> list[Command]:
        """One flow from a flow file: it skips decode and the flow table."""
        self._advance(flow.start)
        self._hand_up([], [flow])
        return self.take()

    def advance(self, now: float) -> list[Command]:
        """Time is `now` (packet or flow time in replay, wall time live): process what the table has
        ready, and once per second of time let the table expire flows, detectors tick and blocks
        expire."""
        self._advance(now)
        out, self._out = self._out, []  # take(), without its call: once per closed flow in a replay
        return out

    def step(self, now: float, app: list[tuple[float, bytes]], flows: list[Flow]) -> list[Command]:
        """advance(now) for a table that handed up `app` and `flows` at `now` and has nothing else
        pending (slipsq.pipeline's engine process, which holds them already): the same calls in the
        same order, without a round of questions to the table."""
        if now > self.now:
            self.now = now
        if app:  # _hand_up(app, flows), inline: one call a message, ~100k messages a capture
            self._apps.run_packets(app, self._out if self.export_queries else None, self.counters)
        if flows:
            self._flows.run_flows(flows, self._out if self.export_flows else None, self.counters)
        if self.now >= self._next_tick:
            self._second()
        out, self._out = self._out, []
        return out

    def steps(self, table: Any, last: int, flows_of: Callable[[bytes], list[Flow]]) -> int:
        """`step` for each message at the head of the pipeline's RecordedTable `table` that needs
        nothing else from its loop (dispatch.run_steps says which; compiled when the call lists
        are): how many it analysed."""
        return self._run_steps(self, table, last, flows_of)

    def _advance(self, now: float) -> None:
        if now > self.now:
            self.now = now
        self.drain()
        if self.now >= self._next_tick:
            self._second()

    def _second(self) -> None:
        """Once per second of time: the table expires idle flows, detectors tick, blocks expire."""
        self._next_tick = int(self.now) + 1.0
        self.table.expire(self.now)
        self.drain()
        self._tick()
        for ip in self.judge.expired(self.now):
            self.table.unblock(ip)
            self._out.append(Unblock(ip, self.now, "block expired", "expiry"))
        self.judge.prune(self.now)

    def drain(self) -> None:
        """Analyse what the flow table has ready: app packets first (they happened before the flow
        that carries them closed), then closed flows, in the order the table emitted them."""
        table = self.table
        while table.pending:
            self._hand_up(table.pop_app(), table.pop_closed())

    def _hand_up(self, app: list[tuple[float, bytes]], flows: list[Flow]) -> None:
        """One hand-up of the table (drain; `step` has these lines inline): its app packets, then its
        closed flows, each past every detector's gate to its on_flow, in one call into the compiled
        loop a batch (dispatch.FlowCalls.run_flows), not a Python frame a flow."""
        if app:
            self._apps.run_packets(app, self._out if self.export_queries else None, self.counters)
        if flows:
            self._flows.run_flows(flows, self._out if self.export_flows else None, self.counters)

    def finish(self) -> list[Command]:
        """End of input: close every open flow and analyse it, then a last tick."""
        self.table.close_all(self.now)
        self.drain()
        self._tick()
        return self.take()

    def app(self, event: AppEvent) -> list[Command]:
        """One application event read from a log (e.g. a Zeek dns.log line)."""
        self._app(event)
        return self.take()

    # --- blocks decided outside the judge -----------------------------------------------------
    def block(self, ip: str, ts: float, duration: float, reason: str, by: str, times: int = 1) -> list[Command]:
        """A block decided by an admin (`by` = "admin:<user>") or re-applied from the store at start
        (`by` = "store"): the same path as the judge's blocks. The table drops its packets at once,
        the judge remembers it (and counts it for repeat offenders); the Block command carries it to
        the kernel (and, unless it came from the store, to the store). The caller checks that `ip`
        may be blocked (AllowList.why_protected) first."""
        self.judge.restore(ip, ts + duration if duration else float("inf"), times)
        self.table.block(ip)
        self._out.append(Block(ip, ts, duration, reason, by, None, times))
        return self.take()

    def unblock(self, ip: str, ts: float, reason: str = "unblocked by admin", who: str = "admin",
                pardon: float | None = None, detectors: Sequence[str] = ()) -> list[Command]:
        """An admin lifted the block of `ip`: the judge forgets it and its evidence, the table passes
        its packets again, the Unblock command removes rule and record. For `pardon` seconds
        (None: judge.pardon; inf: forever; 0: none) the evidence of the detectors that decided the
        block (the judge's open window; else `detectors`, e.g. the stored block's; else all) cannot
        block it again: the detectors still see what they saw (a beacon goes on), and an admin's
        unblock is a verdict on it. Other evidence still can."""
        seconds = self.config["judge.pardon"] if pardon is None else pardon
        until = ts + seconds if seconds > 0 else None
        covers = self.judge.window_detectors(ip) or frozenset(detectors)  # what decided the block
        self.judge.forget(ip)
        if until is not None:
            self.judge.pardon(ip, until, covers)
        self.table.unblock(ip)
        self._out.append(Unblock(ip, ts, reason, who, until, tuple(sorted(covers))))
        return self.take()

    def _app(self, event: AppEvent) -> None:
        """One application event: decoded from a packet the table handed up, or read from a log.
        DNS answers also feed `ctx.dns_names` (dispatch.AppCalls)."""
        self._apps.run(event, self._out if self.export_queries else None, self.counters)

    # --- internals ----------------------------------------------------------------------------
    def _failed(self, what: Any, e: Exception) -> None:
        """`what` (a detector method, or a name) raised `e` (see __init__). The name is made here, on
        failure only: the calls themselves pass what they already hold."""
        if self.on_error is None:
            raise e
        if not isinstance(what, str):  # a bound method: "beacon.on_flow"
            hook = what.__name__
            # the detector whose hook it is, also when the detector handed the engine another
            # object's method (portscan's compiled per-flow path)
            owner = next((d for d in self.detectors if getattr(d, hook, None) == what), what.__self__)
            what = f"{getattr(owner, 'name', None) or type(owner).__name__}.{hook}"
        self.on_error(what, e)

    def _tick(self) -> None:
        self._on_tick.run(self.now)

    def _evidence(self, ev: Evidence) -> None:
        decision: Decision = self.judge.add(ev)
        alert = Alert.build(ev, decision, self.ctx.enrichers, decided=self.now)
        self.counters.alerts += 1
        self._out.append(alert)
        if decision.action == "block":
            self.counters.blocks += 1
            self.table.block(decision.blocked_ip)  # at once: from the next packet on, it is dropped
            self._out.append(Block(decision.blocked_ip, ev.ts, decision.duration, decision.reason, "judge", alert))
            for ip in decision.lifted:  # older blocks in its /64 or /48, lifted to make room for it
                self.table.unblock(ip)
                self._out.append(Unblock(ip, ev.ts, f"lifted to make room for the block of {decision.blocked_ip}: "
                                         "the judge's blocks in one IPv6 /64 or /48 are bounded "
                                         "(judge.max_blocks_per_64)", "judge"))

