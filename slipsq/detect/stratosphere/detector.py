"""The Stratosphere detector: behavioral letters per 4-tuple, matched against Markov-chain models.

On each closed TCP/UDP flow: the flow's 4-tuple gets its letter (slipsq.detect.stratosphere.letters); once the tuple's
string has `markov.min_letters` characters, it is matched against the models of its protocol in
order (slipsq.detect.stratosphere.markov), and the first match wins. A model of DNS traffic (DNS as
its label's application: From-Botnet-UDP-DNS-DGA-1) is matched to tuples to port 53 only: chrony
polling an NTP server every 64 s matched it at 0.8, one finding away from blocking the time server.
A `Normal` model's match means benign: no evidence. A malicious match is evidence against the
server end (the client with `markov.block = "client"`):

  threat HIGH; confidence = min(1, letters / stratosphere.confident_letters)
  (a longer string that still matches is a surer match; 7 letters give 0.2 with the defaults)

The key `stratosphere:<server>:<port>/<proto>` lets the judge count a service's matches once per
window, whichever local clients they came from and whichever models matched: two devices polling the
same NTP server on a fixed interval are one finding, not two adding up to a block, and so are two
models that match one tuple (several of the 2015 HTTP C&C models are near copies: a phone's
connectivity check every 5 minutes matched two and blocked the check's server at 0.8 + 0.8). One
Markov finding is at most high x 1 = 0.8: it blocks only with another finding.
(`stratosphere:<client>-<server>:...` when the client is the offender, `markov.block = "client"`).
The evidence is emitted on the tuple's first match of that label in a judge window, and again only
when the confidence has grown by CONFIDENCE_STEP since (or reached 1), not on every flow.

The letters and the matching run in the compiled `_letters` unless the readable twins `letters` /
`markov` are asked for (slipsq.twins). Both give the same strings and distances
(tests/test_letters_compiled.py); the choice is made once per detector.

A match on a tuple whose connections never completed (SYNs refused or unanswered, UDP never
answered) against a server local hosts use (ctx.servers, detect/inuse.py) is reported with
may_block=False: such attempts can be sent with a local host's address, or by a web page's script,
to get the network's resolver blocked (the rule of port scans and reconnection storms). A match
between two local addresses (a phone polling the NAS every 30 s looks like an HTTP C&C) is reported
with may_block=False too, unless `markov.local_may_block` (the rule of beacons and storms), and so is
one where an outside client polls a local server (an uptime monitor on a forwarded port: the beacon
detector ignores inbound polling too), which would otherwise block our own server.

It never blocks and never does I/O: models come in `ctx.models` (loaded by the caller).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from slipsq import twins
from slipsq.config import COUNT, Option, positive, positive_count
from slipsq.detect.base import NO_EVIDENCE, Context, Detector
from slipsq.detect.prefixes import is_local
from slipsq.detect.stratosphere.letters import LetterTable, TupleLetters
from slipsq.detect.stratosphere.markov import Chain, Model, match
from slipsq.detect.tcpstate import opened
from slipsq.flow import Flow
from slipsq.records import HIGH, Evidence

CONFIDENCE_STEP = 0.1

Matcher = Callable[[list[Any], Any], "tuple[Any, float] | None"]


def first_match(chains: list[Chain], t: TupleLetters) -> tuple[Chain, float] | None:
    """The first chain the tuple's string matches, with its distance (the readable twin of
    `_letters.first_match`): markov.match on the tuple's string and its kept transition counts."""
    return match(chains, t.text, t.pairs)


def implementation() -> tuple[type, type, Matcher, bool]:
    """(LetterTable, Chain, first_match, compiled): the compiled ones unless slipsq.twins asks for
    the readable twins."""
    fast = twins.compiled("slipsq.detect.stratosphere._letters")
    if fast is None:
        return LetterTable, Chain, first_match, False
    return fast.LetterTable, fast.Chain, fast.first_match, True


class StratosphereDetector(Detector):
    name: ClassVar[str] = "stratosphere"
    options: ClassVar[tuple[Option, ...]] = (
        Option("stratosphere.max_letters", 4096,
               "a 4-tuple keeps (and matches) only its last this many characters",
               lambda v: 16 <= v < 2**31, ">= 16 and below 2147483648"),
        Option("stratosphere.tuple_idle", 21600.0,
               "a 4-tuple without a flow for this many seconds is forgotten (bounded memory)",
               positive, "> 0", duration=True),
        Option("stratosphere.max_tuples", 100_000,
               "most 4-tuples kept; beyond it the least recently active is forgotten", positive_count, COUNT),
        Option("stratosphere.confident_letters", 35,
               "a match over this many characters has confidence 1 (fewer: proportionally less)",
               positive, "> 0"),
    )
    evidence_kinds: ClassVar[tuple[str, ...]] = ("markov-match",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        cfg = self.cfg
        table_cls, chain_cls, self._first_match, self.compiled = implementation()
        self.table: LetterTable = table_cls(cfg["letters.variant"], self.opt("max_letters"),
                                            self.opt("tuple_idle"), self.opt("max_tuples"))
        self.min_letters: int = cfg["markov.min_letters"]
        self.block_client = cfg["markov.block"] == "client"
        self.local_may_block: bool = cfg["markov.local_may_block"]
        self.window: float = cfg["judge.window"]
        self.full_letters: int = self.opt("confident_letters")
        # per protocol, in the models' order: every model (tuples to port 53), and all but the DNS
        # models (Model.dns_only: the other tuples)
        self.chains: dict[str, list[Chain]] = {"tcp": [], "udp": []}
        self.not_dns: dict[str, list[Chain]] = {"tcp": [], "udp": []}
        for m in ctx.models:
            if isinstance(m, Model) and m.proto in self.chains:
                # a tuple's string never outgrows the table's max_chars: the chain needs no more of T
                chain = chain_cls(m, self.table.max_chars)
                self.chains[m.proto].append(chain)
                if not m.dns_only:
                    self.not_dns[m.proto].append(chain)
        self.matches = 0  # malicious matches (flows whose tuple matched a malicious model)
        self.benign_matches = 0
        fast = twins.compiled("slipsq.detect.stratosphere._letters") if self.compiled else None
        if fast is not None:
            # the engine calls on_flow once per flow: hand it the compiled path (_letters.PerFlow: the
            # method below in C, back to Python only on a match) rather than a Python frame that
            # calls the table and the matcher in turn
            self.on_flow = fast.PerFlow(  # type: ignore[method-assign]
                self.table, self.min_letters, self.chains["tcp"], self.chains["udp"], self._matched,
                self.not_dns["tcp"], self.not_dns["udp"]).on_flow

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        """The readable twin of _letters.PerFlow.on_flow (what the engine calls when compiled)."""
        t = self.table.add(flow)
        if t is None:
            return NO_EVIDENCE
        if t.length < self.min_letters:  # most tuples: too short to match, nothing more to do
            return NO_EVIDENCE
        # the models of the tuple's protocol (its DNS models only to port 53)
        chains = (self.chains if t.port == 53 else self.not_dns)[flow.proto]
        if not chains:
            return NO_EVIDENCE
        hit = self._first_match(chains, t)
        if hit is not None:
            return self._matched(t, hit[0].model, hit[1], flow)
        t.label = ""
        return NO_EVIDENCE

    def _matched(self, t: TupleLetters, model: Model, dist: float, flow: Flow) -> Sequence[Evidence]:
        t.label = model.label
        if model.benign:
            self.benign_matches += 1
            return NO_EVIDENCE
        self.matches += 1
        n = t.length
        conf = min(1.0, n / self.full_letters)
        ts = max(flow.start, flow.end)
        win = int(ts // self.window)
        last = t.alerted
        if last is not None and last[0] == win and last[1] == model.label and not (
                conf >= last[2] + CONFIDENCE_STEP or conf >= 1.0 > last[2]):
            return NO_EVIDENCE
        t.alerted = (win, model.label, conf)
        tuple_id = f"{t.client}-{t.server}:{t.port}/{t.proto}"
        service = f"{t.server}:{t.port}/{t.proto}"  # against the server: every client's match is one finding
        tail = t.text[-40:]
        guard = ""
        if not self.block_client and self._unheld(flow) and self.ctx.servers.in_use(t.server, ts, self.window):
            guard = (f"; {t.server} served connections in the last {self.window:.0f}s and this tuple's "
                     "connections never completed: a match alone never blocks it, attempts can be forged")
        elif not self.block_client and is_local(t.server) and not is_local(t.client):
            guard = (f"; inbound: an outside client's connections to {t.server}, one of ours: reported, never "
                     "blocks it (an uptime monitor polls a forwarded port as a bot polls its C&C)")
        elif not self.local_may_block and is_local(t.client) and is_local(t.server):
            guard = "; both ends local: reported, never blocks (markov.local_may_block)"
        return [Evidence(
            ts=ts, detector=self.name,
            offender=t.client if self.block_client else t.server,
            src_ip=t.client, dst_ip=t.server, dst_port=t.port, proto=t.proto,
            description=(f"{t.client} -> {t.server}:{t.port}/{t.proto} behaves like {model.label}: "
                         f"Markov distance {dist:.3f} <= {model.threshold:g} over {n} letters "
                         f"(...{tail}){guard}"),
            threat_level=HIGH, confidence=conf, label=model.label, may_block=not guard,
            key=f"stratosphere:{tuple_id if self.block_client else service}", flows=(flow,))]

    @staticmethod
    def _unheld(flow: Flow) -> bool:
        """The flow that matched was no connection its server took part in: a TCP handshake that never
        completed (tcpstate.opened), a UDP flow never answered. Such attempts can be sent with any
        local host's address (or by a web page's script), so against a server local hosts use they
        are reported but never block by themselves (as port scans and reconnection storms)."""
        return not opened(flow) if flow.proto == "tcp" else flow.dpkts == 0

    def on_tick(self, now: float) -> Sequence[Evidence]:
        self.table.expire(now)
        return NO_EVIDENCE

    def tuples(self) -> list[dict[str, Any]]:
        """Every live 4-tuple with its letters, first seen first (for `slipsq replay --tuples`)."""
        rows = sorted(self.table, key=lambda t: (t.first_seen, t.key))
        return [{"src_ip": t.client, "dst_ip": t.server, "dst_port": t.port, "proto": t.proto,
                 "letters": t.text, "flows": t.flows, "label": t.label} for t in rows]
