"""DGA: bursts of NXDOMAIN answers for random-looking domains to one host (events, and packets
through the compiled table, which hands NXDOMAIN responses up); the guards: search domains, Chrome's
probes, tracker-blocking resolvers, resolver hiccups, forged answers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from flowgen import T0, config, replay_pcap, run, write_scenario

from slipsq.detect.dga import DGA, looks_random, site
from slipsq.flow import AppEvent
from tools.gen_scenarios import dga_lookups, normal_browsing

HOST, RESOLVER = "192.168.1.66", "192.168.1.1"
EPOCH = 1_717_243_200.0
POPULAR = ["google", "doubleclick", "googlesyndication", "scorecardresearch", "casalemedia", "pubmatic",
           "rubiconproject", "criteo", "taboola", "outbrain", "quantserve", "chartbeat", "optimizely",
           "mixpanel", "cloudflare", "akamaihd", "wikipedia", "microsoft", "windowsupdate", "instagram",
           "netflix", "spotify", "stackoverflow", "duckduckgo", "steampowered", "playstation", "aliexpress",
           "pinterest", "wordpress", "substack", "braintreegateway", "everesttech", "smartadserver",
           "sharethrough", "bounceexchange", "washingtonpost", "theguardian", "accuweather", "protonmail",
           "salesforce", "doubleverify", "adsafeprotected", "brightcove", "stackexchange", "datadoghq"]


def nx(ts: float, name: str, client: str = HOST, resolver: str = RESOLVER, rcode: int = 3) -> AppEvent:
    return AppEvent(ts, "dns", resolver, 53, client, 53000, "udp",
                    {"query": name, "qtype": 1, "answers": [], "rcode": rcode, "response": True})


def ok(ts: float, name: str, client: str = HOST, resolver: str = RESOLVER) -> AppEvent:
    return AppEvent(ts, "dns", resolver, 53, client, 53000, "udp",
                    {"query": name, "qtype": 1, "answers": ["198.51.100.7"], "rcode": 0, "response": True})


def random_names(n: int, seed: int = 1, tld: str = "com") -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(10, 16))) + "." + tld
            for _ in range(n)]


def test_site_and_randomness() -> None:
    assert site("a.b.example.com") == "example.com" and site("www.bbc.co.uk") == "bbc.co.uk"
    assert all(not looks_random(p) for p in POPULAR[:40])  # 0 of these 40
    names = random_names(400)
    share = sum(looks_random(site(n).partition(".")[0]) for n in names) / len(names)
    assert 0.6 < share < 0.95
    assert looks_random("x7k2p9qmz") and not looks_random("shop2024")


def test_a_sustained_dga_blocks_the_host() -> None:
    events = [nx(T0 + i * 2, n) for i, n in enumerate(random_names(150))]
    rec, _ = run([DGA], events=events)
    alerts = rec.by("dga")
    assert rec.blocked_ips == [HOST]
    first = alerts[0].evidence
    assert first.offender == HOST and first.threat_level == 0.5 and first.confidence == 0.6
    assert first.description.startswith(f"DGA-like DNS from {HOST}: 10 random-looking domains that do not exist")
    blocking = next(a for a in alerts if a.decision.action == "block").evidence
    assert blocking.threat_level == 1.0 and blocking.confidence == 1.0
    assert len(alerts) <= 5 and {a.evidence.key for a in alerts} == {f"dga:{HOST}"}


def test_a_few_nxdomains_alert_only() -> None:
    names = [n for n in random_names(40) if looks_random(site(n).partition(".")[0])][:15]
    rec, _ = run([DGA], events=[nx(T0 + i, n) for i, n in enumerate(names)])
    assert rec.by("dga") and rec.blocked_ips == []


def test_search_domain_reverse_lookups_and_chrome_probes() -> None:
    names = random_names(200)
    events = [nx(T0 + i, f"{n}.corp.example.net") for i, n in enumerate(names)]  # one site
    events += [nx(T0 + i, f"{n.split('.')[0]}.lan") for i, n in enumerate(names)]  # local suffix
    events += [nx(T0 + i, f"{i}.1.168.192.in-addr.arpa") for i in range(200)]  # reverse lookups
    events += [nx(T0 + i, n.split(".")[0]) for i, n in enumerate(names)]  # single labels: Chrome's probes
    rec, _ = run([DGA], events=events)
    assert rec.seen == []


def test_a_tracker_blocking_resolver_is_not_a_dga() -> None:
    # Pi-hole style: NXDOMAIN for every ad and tracker site a page pulls in
    events = [nx(T0 + i, f"cdn.{p}.com") for i, p in enumerate(POPULAR * 3)]
    rec, _ = run([DGA], events=events)
    assert rec.seen == []


def test_a_resolver_hiccup() -> None:
    names = random_names(80)
    servfail = [nx(T0 + i, n, rcode=2) for i, n in enumerate(names)]
    rec, _ = run([DGA], events=servfail)
    assert rec.seen == []
    # NXDOMAIN for 9 names that then resolve, and 9 more: never 10 at once
    flaky = [e for i, n in enumerate(names[:9]) for e in (nx(T0 + i, n), ok(T0 + i + 0.5, n))]
    flaky += [nx(T0 + 20 + i, n) for i, n in enumerate(names[9:18])]
    rec, _ = run([DGA], events=flaky)
    assert rec.seen == []


def test_forged_answers_from_an_unused_resolver_do_not_count() -> None:
    names = random_names(150)
    forged = [nx(T0 + i, n, resolver="198.51.100.53") for i, n in enumerate(names)]
    rec, _ = run([DGA], events=forged)
    assert rec.seen == []
    used = [ok(T0 - 1, "www.example.com", resolver="198.51.100.53"), *forged]  # the host does use it
    rec, _ = run([DGA], events=used)
    assert rec.blocked_ips == [HOST]


def test_mdns_and_clients_not_ours() -> None:
    names = random_names(150)
    mdns = [AppEvent(T0 + i, "dns", RESOLVER, 5353, HOST, 5353, "udp",
                     {"query": n, "qtype": 1, "answers": [], "rcode": 3, "response": True})
            for i, n in enumerate(names)]
    rec, _ = run([DGA], events=mdns)
    assert rec.seen == []
    public = [nx(T0 + i, n, client="2001:db8::66") for i, n in enumerate(names)]
    rec, _ = run([DGA], events=public)
    assert rec.by("dga") and rec.blocked_ips == []


@pytest.mark.parametrize("pure", [False, True], ids=["c", "py"])
def test_packets_through_the_flow_table(tmp_path: Path, pure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if pure:
        monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1")
    pcap = write_scenario(tmp_path / "dga.pcap",
                          dga_lookups(HOST, RESOLVER, count=150, start=EPOCH, hit_every=60),
                          normal_browsing("192.168.1.10", 40, 300, start=EPOCH))
    rec = replay_pcap(pcap, [DGA])
    assert rec.blocked_ips == [HOST]
    assert {a.evidence.offender for a in rec.seen} == {HOST}


def test_a_flood_of_nxdomains_to_invented_hosts_stays_within_the_total_and_the_real_dga_blocks() -> None:
    """NXDOMAINs from the local resolver to 2,000 invented clients fill no more than
    dga.max_total_sites; the infected host, active last, keeps its count and is blocked."""
    cfg = config([DGA], dga__max_total_sites=4000)
    names = random_names(40, seed=7)
    flood = [nx(T0 + i * 0.001 + k * 0.0001, names[(i + k * 7) % 40], client=f"10.2.{i // 250}.{i % 250 + 1}")
             for i in range(2000) for k in range(5)]
    real = [nx(T0 + 10 + i * 2, n) for i, n in enumerate(random_names(150))]
    rec, eng = run([DGA], events=flood + real, cfg=cfg)
    det = next(d for d in eng.engine.detectors if isinstance(d, DGA))
    assert det.sites.total <= 4000 and det.sites.total == sum(len(m) for m in det.sites.maps.values())
    assert HOST in rec.blocked_ips
