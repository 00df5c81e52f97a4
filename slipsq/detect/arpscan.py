"""ARP scan detector: one sender asking "who-has" for many distinct addresses in a short time.

A host discovering its LAN (nmap -sn, netdiscover, worms) sends ARP requests for every address of
the subnet; a normal host asks for its gateway and the few peers it talks to. Per sender (MAC, IP)
the detector keeps the addresses asked for in the last `arpscan.period` seconds (a sliding window
in packet time, bounded per sender and over all senders) and counts them. It returns Evidence
only: it never blocks and never does I/O. ARP is seen in captures and inline on bridges; flow files carry none.

Arithmetic (n = distinct targets in the period, T = `arpscan.min_targets`, default 20 in 60 s):
  threat = medium for n >= T, high for n >= 3 T, critical for n >= 10 T; confidence 1.0
  so sweeping a whole /24 (254 targets) in a minute is critical × 1.0 and blocks by itself, while 20
  to 59 targets (0.5) need another finding against the same host in the hour.
By default (`arpscan.may_block` off) an ARP sweep is reported at low threat and never blocks: the
LAN is swept by the house's own apps (Fing's "Scan network", LocalSend's discovery when multicast
fails, Home Assistant, printer set-up apps), and both blocked the phone they ran on; a block at the
gateway cuts the sender off the Internet, not from the LAN it sweeps. A scanning worm is caught by what
it does next (its port scans, its C&C), with this finding beside them in the alert.
Gratuitous ARP (target = sender) is ignored. Probes from 0.0.0.0 (RFC 5227 duplicate address
detection, a booting host) are reported with may_block=False: there is no IP to block.
Evidence is emitted when n first reaches T, when it doubles, and when the threat rises; a new burst
in the judge window of the sender's last report only when it goes past that report (Home
Assistant's Nmap Tracker sweeps the /24 every 120 s: five reports a sweep were 150 alerts an hour).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, report_due
from slipsq.flow import AppEvent
from slipsq.lru import Nested, put, touch
from slipsq.records import CRITICAL, HIGH, LOW, MEDIUM, Evidence


@dataclass(slots=True)
class _Sender:
    first: float = 0.0
    last: float = 0.0
    emitted: int = 0
    emitted_threat: float = 0.0
    emitted_window: int = -1


class ArpScan(Detector):
    name = "arpscan"
    evidence_kinds = ("arp-scan",)
    app_kinds = frozenset({"arp"})
    options = (
        Option("arpscan.min_targets", 20, "distinct addresses one sender asks for (ARP who-has) within the "
               "period that make an ARP scan", positive, "> 0"),
        Option("arpscan.may_block", False, "an ARP sweep may block its sender (threat by its size; off: reported "
               "low, never blocks, as network scanner and discovery apps sweep the LAN too)"),
        Option("arpscan.period", 60.0, "the sliding period (s) for arpscan.min_targets", positive, "> 0",
               duration=True),
        Option("arpscan.max_senders", 10_000, "ARP senders (MAC, IP) tracked (least recently heard "
               "forgotten first)", positive, "> 0"),
        Option("arpscan.max_targets", 65_536, "addresses asked for remembered per sender within the period "
               "(the least recently asked forgotten first)", positive, "> 0"),
        Option("arpscan.max_total_targets", 131_072, "addresses asked for remembered over all senders (the "
               "least recently heard senders' are forgotten first)", positive, "> 0"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.min_n: int = self.opt("min_targets")
        self.period: float = self.opt("period")
        self.may_block: bool = self.opt("may_block")
        self.window: float = self.cfg["judge.window"]
        self.max_senders: int = self.opt("max_senders")
        self.max_targets: int = self.opt("max_targets")
        # least recently heard first: idle senders are forgotten from the front, O(1) each
        self.senders: OrderedDict[tuple[str, str], _Sender] = OrderedDict()
        # sender -> its last report (judge window, count, threat), kept after its burst is forgotten
        self.reported: OrderedDict[tuple[str, str], tuple[int, int, float]] = OrderedDict()
        # sender -> {target: when last asked for}, least recently asked first: the distinct targets
        # of the period are its entries asked for within it
        self.targets: Nested[tuple[str, str], str, float] = Nested(
            self.max_senders, self.max_targets, self.opt("max_total_targets"))

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        if event.kind != "arp" or event.data.get("op") != 1:
            return NO_EVIDENCE
        src_ip, dst_ip = event.data.get("src_ip", ""), event.data.get("dst_ip", "")
        if not dst_ip or src_ip == dst_ip:
            return NO_EVIDENCE
        key = (event.data.get("src_mac", ""), src_ip)
        if key not in self.senders:  # new, or forgotten: whatever targets are left belong to no burst
            self.targets.discard(key)
        s = touch(self.senders, key, _Sender, self.max_senders)
        ts = event.ts
        targets = self.targets.touch(key)
        while targets and next(iter(targets.values())) < ts - self.period:
            self.targets.pop_first(key)
        if not targets:  # a new burst: reported afresh in a new judge window, else only past the last report
            s.first = ts
            last = self.reported.get(key)
            if last is not None and last[0] == int(ts // self.window):
                s.emitted_window, s.emitted, s.emitted_threat = last
            else:
                s.emitted, s.emitted_threat = 0, 0.0
        self.targets.put(key, dst_ip, ts)
        s.last = ts
        return self._judge(key, s, len(targets), event)

    def _judge(self, key: tuple[str, str], s: _Sender, n: int, event: AppEvent) -> Sequence[Evidence]:
        if n < self.min_n:
            return NO_EVIDENCE
        threat = CRITICAL if n >= 10 * self.min_n else HIGH if n >= 3 * self.min_n else MEDIUM
        window = int(event.ts // self.window)
        if not report_due(s, n, threat, again=window != s.emitted_window):
            return NO_EVIDENCE
        s.emitted_window = window
        put(self.reported, key, (window, s.emitted, s.emitted_threat), self.max_senders)
        mac, ip = key
        probe = ip in ("", "0.0.0.0")
        who = f"{mac} (ARP probes from 0.0.0.0)" if probe else f"{ip} ({mac})"
        desc = (f"ARP scan from {who}: who-has for {n} addresses in {event.ts - s.first:.0f}s "
                f"(period {self.period:g}s)")
        if not self.may_block:
            threat = LOW
            desc += "; reported low, never blocks: discovery apps sweep the LAN too (arpscan.may_block)"
        return [Evidence(ts=event.ts, detector=self.name, offender=ip or "0.0.0.0", src_ip=ip or "0.0.0.0",
                         dst_ip=event.data.get("dst_ip", ""), dst_port=0, proto="arp", description=desc,
                         threat_level=threat, confidence=1.0, may_block=self.may_block and not probe,
                         key=f"arpscan:{mac}:{ip}")]

    def on_tick(self, now: float) -> Sequence[Evidence]:
        # keep the table small on a busy LAN: the front is the sender heard least recently
        senders = self.senders
        while senders:
            key, s = next(iter(senders.items()))
            if s.last >= now - self.period:
                break
            senders.popitem(last=False)
            self.targets.discard(key)
        return NO_EVIDENCE
