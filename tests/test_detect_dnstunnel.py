"""DNS tunnel: hundreds of distinct encoded names under one domain from one host (events, and the
corpus's dnscat2 capture through the compiled table); the guards: lookup APIs, CDN names, repeats,
reverse lookups, windows, clients that are not ours, the bound."""

from __future__ import annotations

import random

from flowgen import T0, config, run

from slipsq.detect.dnstunnel import DnsTunnel
from slipsq.flow import AppEvent

HOST, RESOLVER = "192.168.1.66", "192.168.1.1"


def answer(ts: float, name: str, client: str = HOST, rcode: int = 0, qtype: int = 16) -> AppEvent:
    """A DNS answer to `client` (a TXT one by default, as dnscat2 asks)."""
    return AppEvent(ts, "dns", RESOLVER, 53, client, 53000, "udp",
                    {"query": name, "qtype": qtype, "answers": [], "rcode": rcode, "response": True})


def hex_names(n: int, domain: str = "tun.c2-updates.net", seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.randbytes(rng.randint(9, 30)).hex()}.{domain}" for _ in range(n)]


def test_a_tunnel_is_reported_at_100_names_and_blocks_at_500() -> None:
    events = [answer(T0 + i, name) for i, name in enumerate(hex_names(600))]
    rec, _ = run([DnsTunnel], events=events)
    found = [a.evidence for a in rec.by("dnstunnel")]
    assert [(e.threat_level, e.confidence) for e in found] == [(0.5, 0.6), (0.5, 0.7), (0.8, 0.8), (1.0, 1.0)]
    assert found[0].description.startswith(f"DNS tunnel from {HOST}: 100 different encoded names under "
                                           "c2-updates.net in 99s (100 asked)")
    assert found[0].offender == HOST and found[0].dst_ip == RESOLVER
    assert rec.blocked_ips == [HOST] and found[-1].ts == T0 + 499 and found[-1].score == 1.0  # the 500th name
    short = [answer(T0 + i, n) for i, n in enumerate(hex_names(600, domain="c2-updates.net", seed=5))
             if len(n) < 20 + len(".c2-updates.net")]  # 9 bytes of hex: below MIN_CHARS
    assert short and run([DnsTunnel], events=short)[0].by("dnstunnel") == []


def test_the_same_names_asked_again_are_counted_once() -> None:
    names = hex_names(80)
    events = [answer(T0 + i * 0.5, names[i % 80]) for i in range(2000)]
    rec, _ = run([DnsTunnel], events=events)
    assert rec.by("dnstunnel") == []


def test_lookup_apis_cdn_names_and_reverse_lookups_are_not_tunnels() -> None:
    rng = random.Random(2)
    events = []
    for i in range(700):
        h = rng.randbytes(20).hex()
        events.append(answer(T0 + i * 4, f"{h[:32]}.{h[32:]}.sxl.sophosxl.net"))  # antivirus reputation
        events.append(answer(T0 + i * 4 + 1, "d" + rng.randbytes(7).hex()[:13] + ".cloudfront.net"))  # short
        v6 = ".".join(rng.randbytes(16).hex()) + ".ip6.arpa"  # 64 nibbles: a reverse lookup
        events.append(answer(T0 + i * 4 + 2, v6))
        events.append(answer(T0 + i * 4 + 3, f"notifications-{i}-accountservices.example.com"))  # words
    rec, _ = run([DnsTunnel], events=events)
    assert rec.by("dnstunnel") == []
    # the control: without the allow list, the antivirus's lookups are a tunnel by this arithmetic
    rec, _ = run([DnsTunnel], events=events, cfg=config([DnsTunnel], **{"dnstunnel.allow_domains": []}))
    assert {a.evidence.label for a in rec.by("dnstunnel")} == {"dns-tunnel"} and rec.blocked_ips == [HOST]


def test_counted_per_window_and_per_domain_one_finding_a_host() -> None:
    events = [answer(T0 + 3000 + i * 2, n) for i, n in enumerate(hex_names(300))]  # 300 by T0+3600 ...
    events += [answer(T0 + 3600 + i * 2, n) for i, n in enumerate(hex_names(300, seed=2))]  # ... 300 after
    events += [answer(T0 + 1 + i * 3, n) for i, n in enumerate(hex_names(300, "x.example.org", 3))]
    rec, _ = run([DnsTunnel], events=events)
    assert rec.blocked_ips == []
    found = rec.by("dnstunnel")
    assert {a.evidence.key for a in found} == {f"dnstunnel:{HOST}"}
    assert {a.evidence.description.split(" under ")[1].split(" ")[0] for a in found} == {"c2-updates.net",
                                                                                       "example.org"}


def test_names_a_page_can_make_a_browser_ask_for_never_count() -> None:
    """A page, an ad or a mail with 400 pictures at random subdomains of four domains nobody owns:
    the browser asks for addresses (A, AAAA, HTTPS), all NXDOMAIN. Counted, and keyed per domain,
    4 x 0.3 blocked the host that read it (a review, 2026-12-07). The same names asked as TXT (a
    tunnel's) under one domain are one finding: an alert at 100 a domain, not a block."""
    names = [n for d in range(4) for n in hex_names(100, f"img.nobody-{d}.net", seed=d)]
    for qtype in (1, 28, 65, 5, 0):  # and a CNAME or no type: how Suricata's eve v1 logs such answers
        rec, _ = run([DnsTunnel], events=[answer(T0 + i * 0.5, n, rcode=3, qtype=qtype) for i, n in enumerate(names)])
        assert rec.by("dnstunnel") == []
    rec, _ = run([DnsTunnel], events=[answer(T0 + i * 0.5, n, rcode=3) for i, n in enumerate(names)])
    found = rec.by("dnstunnel")
    assert len(found) == 4 and {a.evidence.key for a in found} == {f"dnstunnel:{HOST}"} and rec.blocked_ips == []


def test_a_tunnel_under_box_is_counted() -> None:
    """.box is a delegated gTLD (routers also use it locally, so the DGA detector skips it): a tunnel's
    domain under it is counted; .local and .arpa names are not."""
    rec, _ = run([DnsTunnel], events=[answer(T0 + i, n) for i, n in enumerate(hex_names(500, "tun.c2.box"))])
    assert rec.blocked_ips == [HOST]
    rec, _ = run([DnsTunnel], events=[answer(T0 + i, n) for i, n in enumerate(hex_names(500, "tun.printer.local"))])
    assert rec.by("dnstunnel") == []


def test_a_client_that_is_not_ours_is_reported_never_blocked() -> None:
    outside = "198.51.100.9"
    rec, _ = run([DnsTunnel], events=[answer(T0 + i, n, client=outside) for i, n in enumerate(hex_names(600))])
    found = rec.by("dnstunnel")
    assert found[-1].evidence.threat_level == 1.0 and rec.blocked_ips == []
    assert "is not a local address" in found[-1].evidence.description


def test_the_names_remembered_are_bounded() -> None:
    cfg = config([DnsTunnel], **{"dnstunnel.max_total_names": 1000})
    names = [f"{n}.d{i % 3000}.com" for i, n in enumerate(hex_names(20_000, domain="x"))]  # 3,000 domains
    _, eng = run([DnsTunnel], events=[answer(T0 + i * 0.01, n) for i, n in enumerate(names)], cfg=cfg)
    det = next(d for d in eng.engine.detectors if isinstance(d, DnsTunnel))
    assert det.names.total <= 1000 and all(len(m) <= 500 for m in det.names.maps.values())
