"""Names come only from resolvers the house trusts (slipsq/detect/resolvers.py).

Found 2026-12-06 (an open item of that day's first review): a C&C that runs its own DNS server told
its one infected host "time.windows.com is me", and its beacons were never reported
(beacon.allow_domains); "drive.google.com is me", and 30 MB uploaded to it were never reported
(exfil.allow_domains). Each scenario has its control: a phone that asks Google's public resolver
directly keeps its connectivity check unblocked because that resolver is in dns.trusted_resolvers,
and without the list it is blocked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import detection
import pytest

from slipsq import twins
from slipsq.allow import AllowList
from slipsq.detect.base import Context
from slipsq.dispatch import AppCalls, make_app_calls
from slipsq.engine import Counters
from slipsq.flow import AppEvent
from slipsq.runmode import load_config
from tools import gen_corpus

CHECK = "198.51.100.204"


def _replay(name: str, tmp_path: Path, config: dict[str, Any] | None = None) -> detection.Result:
    return detection.run_scenario(gen_corpus.BY_NAME[name], tmp_path, config)


@pytest.mark.parametrize("name", ["beacon-own-resolver", "exfil-own-resolver"])
def test_a_cnc_that_names_itself_with_its_own_dns_server_is_blocked(name: str, tmp_path: Path) -> None:
    r = _replay(name, tmp_path)
    assert gen_corpus.CNC in r.blocked, [a["description"] for a in r.alerts]
    # the detector the name used to silence reports it again
    assert any(a["detector"] == name.split("-")[0] and a["offender"] == gen_corpus.CNC for a in r.alerts)


def test_a_public_resolver_asked_directly_still_names_a_connectivity_check(tmp_path: Path) -> None:
    r = _replay("public-resolver-checks", tmp_path)
    assert r.blocked == [], [a["description"] for a in r.blocks]
    # named: not even reported (the phone's hourly question to 8.8.8.8 itself is, as a beacon)
    assert not [a for a in r.alerts if a["detector"] == "beacon" and a["offender"] == CHECK]


def test_without_the_public_resolvers_that_check_is_blocked(tmp_path: Path) -> None:
    r = _replay("public-resolver-checks", tmp_path, {"dns.trusted_resolvers": []})
    assert r.blocked == [CHECK]


def _learn(resolver: str, config: dict[str, Any] | None = None, allow: AllowList | None = None,
           cls: Any = None, port: int = 53, client: str = "192.168.1.66") -> Context:
    """One DNS answer from `resolver`:`port` to `client` (a LAN host), through the engine's app calls
    (`cls`, else the twin this run chose), into a fresh context's dns_names."""
    ctx = Context(load_config(None, config or {}), allow or AllowList())
    args: tuple[Any, ...] = ({}, _Nothing(), lambda b, t: [], ctx, 100, _raise)
    calls = make_app_calls(*args) if cls is None else cls(*args)
    event = AppEvent(1.0, "dns", resolver, port, client, 40000, "udp",
                     {"query": "time.windows.com", "answers": ["203.0.113.66"], "rcode": 0, "response": True})
    calls.run(event, None, Counters())
    return ctx


class _Nothing:
    def run(self, event: AppEvent) -> None:
        pass


def _raise(what: Any, e: Exception) -> None:
    raise e


@pytest.mark.parametrize(("resolver", "learnt"), [
    ("192.168.1.1", True),        # the house's router
    ("fd00::53", True),           # a ULA resolver
    ("8.8.8.8", True),            # listed public resolvers
    ("2606:4700:4700::1111", True),
    ("203.0.113.66", False),      # anyone else: the C&C's own server
    ("198.51.100.53", False),
])
def test_names_are_learnt_only_from_trusted_resolvers(resolver: str, learnt: bool) -> None:
    ctx = _learn(resolver)
    assert (ctx.dns_names.get("203.0.113.66") == {"time.windows.com"}) is learnt
    assert ctx.resolvers.untrusted == (0 if learnt else 1)


def test_an_infected_host_cannot_vouch_for_its_own_cnc() -> None:
    """Found by the second review of 2026-12-06: a local 'resolver' was trusted whoever it answered
    and from whatever port. An unsolicited mDNS 'response' (port 5353, outside the flow table's
    direction rule for port 53) from the infected host, or its answer to a query forged from the C&C's
    address and hairpinned through the gateway, named the C&C drive.google.com."""
    assert not _learn("192.168.1.66", port=5353, client="203.0.113.66").dns_names  # mDNS, to the C&C
    assert not _learn("192.168.1.66", port=5353, client="192.168.1.10").dns_names  # mDNS, to a LAN host
    assert not _learn("192.168.1.66", client="203.0.113.66").dns_names  # port 53, to an outside "client"
    assert not _learn("8.8.8.8", port=5353).dns_names  # a listed resolver, but not its DNS port
    assert _learn("192.168.1.1", client="192.168.1.66").dns_names  # the router answering a LAN host


def test_the_allow_list_and_the_config_make_a_resolver_trusted() -> None:
    assert _learn("198.51.100.53", allow=AllowList(["198.51.100.53"])).dns_names  # allow.ips, infrastructure
    assert _learn("198.51.100.53", {"dns.trusted_resolvers": ["198.51.100.53"]}).dns_names
    assert not _learn("8.8.8.8", {"dns.trusted_resolvers": []}).dns_names


def test_both_twins_agree() -> None:
    """The compiled AppCalls (which runs Resolvers.trusts' test in C) and its readable twin learn
    from the same resolvers, and count the same untrusted answers, in every case above."""
    fast = twins.compiled("slipsq._dispatch")
    if fast is None:
        pytest.skip("no compiled build here")
    cases: list[tuple[str, dict[str, Any]]] = [
        *((r, {}) for r in ("192.168.1.1", "fd00::53", "8.8.8.8", "2606:4700:4700::1111", "203.0.113.66",
                            "198.51.100.53", "::ffff:8.8.8.8", "::ffff:192.168.1.1", "not an address")),
        ("192.168.1.66", {"port": 5353, "client": "203.0.113.66"}),
        ("192.168.1.66", {"port": 5353}),
        ("192.168.1.66", {"client": "203.0.113.66"}),
        ("8.8.8.8", {"port": 5353}),
        ("192.168.1.1", {"port": "53"}),  # a log reader's odd type: not 53
        ("198.51.100.53", {"allow": AllowList(["198.51.100.53"])}),
        ("198.51.100.53", {"config": {"dns.trusted_resolvers": ["198.51.100.53"]}}),
        ("8.8.8.8", {"config": {"dns.trusted_resolvers": []}}),
    ]
    got = [[(dict(ctx.dns_names), ctx.resolvers.untrusted) for ctx in (_learn(r, cls=cls, **kw) for r, kw in cases)]
           for cls in (AppCalls, fast.AppCalls)]
    assert got[0] == got[1]
    # (text that is no address is protected from blocking, and was trusted for it: no longer)
    assert [bool(names) for names, _ in got[0]] == [True, True, True, True, False, False, False, True, False,
                                                    False, False, False, False, False, True, True, False]
    assert all(untrusted == (0 if names else 1) for names, untrusted in got[0])


@pytest.mark.parametrize("compiled", [False, True])
def test_names_are_bounded_in_all_not_only_per_address(compiled: bool) -> None:
    """A LAN host resolved distinct 240-character names through 8.8.8.8, 16 an address: each address
    then cost 5.6 kB against the 410 B the memory budget counted (a review, 2026-12-07: 49 MB against
    a 5.2 MB share at memory.budget_mb = 100). dns.max_names bounds the names over all addresses: the
    least recently answered addresses go while there are more."""
    if compiled:
        cls = pytest.importorskip("slipsq._dispatch").AppCalls
    else:
        cls = AppCalls
    ctx = Context(load_config(None), AllowList())
    calls = cls({}, _Nothing(), lambda b, t: [], ctx, 1000, _raise, 500)
    for i in range(2000):
        answer = f"198.18.{i // 16 // 250}.{i // 16 % 250}"
        calls.run(AppEvent(1.0 + i, "dns", "8.8.8.8", 53, "192.168.1.66", 40000, "udp",
                           {"query": f"{i:05d}" + "x" * 235 + ".example.com", "answers": [answer], "rcode": 0,
                            "response": True}), None, Counters())
        total = sum(len(v) for v in ctx.dns_names.values())
        assert total == calls.names and total <= 500
    assert 500 - 16 < total <= 500  # whole addresses go, 16 names each
    assert "198.18.0.124" in ctx.dns_names and "198.18.0.0" not in ctx.dns_names  # the newest stay
    # a reload hands the engine's map to a new context: the calls count it again before adding
    del ctx.dns_names["198.18.0.124"]
    ctx.dns_names = type(ctx.dns_names)(ctx.dns_names)
    calls.run(AppEvent(9999.0, "dns", "8.8.8.8", 53, "192.168.1.66", 40000, "udp",
                       {"query": "one.more.example", "answers": ["198.18.9.9"], "rcode": 0, "response": True}),
              None, Counters())
    assert calls.names == sum(len(v) for v in ctx.dns_names.values()) <= 500
