"""Brute force detector: bursts of short logins by port and by banner; admins and mail pollers stay quiet."""

from __future__ import annotations

import pytest
from flowgen import T0, both_twins, config, flow, run, sort_flows

from slipsq.detect.bruteforce import BruteForce
from slipsq.errors import ConfigError
from slipsq.flow import AppEvent, Flow

ATTACKER = "198.51.100.66"
SERVER = "192.168.1.10"

implementation = both_twins("slipsq.detect._bruteforce")  # every test on the readable (py) and compiled (c) path


def attempts(src: str, dst: str, port: int, n: int, start: float = T0, every: float = 3.0,
             dur: float = 2.5, sport0: int = 40000) -> list[Flow]:
    return [flow(start + i * every, src, dst, port, dur=dur, sbytes=1500, dbytes=2500, sport=sport0 + i)
            for i in range(n)]


@pytest.mark.parametrize("port,service", [(22, "ssh"), (3389, "rdp"), (21, "ftp"), (445, "smb")])
def test_burst_from_outside_blocks_at_the_threshold(port: int, service: str) -> None:
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, port, 25))
    assert rec.blocked_ips == [ATTACKER]
    first = rec.by("bruteforce")[0].evidence
    assert first.description.startswith(f"{service} brute force from {ATTACKER} to {SERVER}:{port}/tcp: 20 ")
    assert first.score == pytest.approx(1.0)


def test_burst_from_inside_needs_three_times_more() -> None:
    inside, vps = "192.168.1.77", "203.0.113.50"  # one of ours guessing at an Internet server
    rec, _ = run([BruteForce], attempts(inside, vps, 22, 59))
    assert rec.by("bruteforce")[0].evidence.score == pytest.approx(0.8) and rec.blocked_ips == []
    rec, _ = run([BruteForce], attempts(inside, vps, 22, 60))
    assert rec.blocked_ips == [inside]


def test_between_two_local_hosts_it_is_reported_never_blocked() -> None:
    """Across VLANs the gateway routes: a Nextcloud's database connection per request, Home
    Assistant's ssh sensor every minute, a camera's FTP upload per snapshot to the NAS (a hunt,
    2026-12-07) blocked the app. Reported; bruteforce.local_may_block makes it block again."""
    app = "192.168.20.10"
    flows = attempts(app, SERVER, 3306, 120, every=10.0, dur=0.2)
    rec, _ = run([BruteForce], flows)
    found = rec.by("bruteforce")
    assert found[-1].evidence.threat_level == 1.0 and rec.blocked_ips == []
    said = found[-1].evidence.description
    assert said.endswith("both ends local: reported, never blocks (bruteforce.local_may_block)")
    rec, _ = run([BruteForce], flows, cfg=config([BruteForce], **{"bruteforce.local_may_block": True}))
    assert rec.blocked_ips == [app]


def test_ssh_on_another_port_is_recognised_by_banner() -> None:
    port = 2200
    banner = AppEvent(T0 - 1, "banner", SERVER, port, ATTACKER, 40000, "tcp",
                      {"service": "ssh", "text": "SSH-2.0-OpenSSH_9.2"})
    flows = attempts(ATTACKER, SERVER, port, 70)
    rec, _ = run([BruteForce], flows, events=[banner])
    assert rec.blocked_ips == [ATTACKER]
    assert rec.by("bruteforce")[0].evidence.label == "ssh"
    rec2, _ = run([BruteForce], flows)  # without the banner, port 2200 says nothing
    assert rec2.by("bruteforce") == []


def test_rdp_is_named_by_the_servers_connection_confirm() -> None:
    confirm = AppEvent(T0 - 1, "banner", SERVER, 13389, ATTACKER, 40000, "tcp", {"service": "rdp", "text": ""})
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, 13389, 25), events=[confirm])
    assert [a.evidence.label for a in rec.by("bruteforce")] == ["rdp"]


def test_http_answer_on_port_22_makes_it_not_a_login_service() -> None:
    answer = AppEvent(T0 - 1, "banner", SERVER, 22, ATTACKER, 40000, "tcp",
                      {"service": "http", "text": "HTTP/1.1 400"})
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, 22, 70), events=[answer])
    assert rec.by("bruteforce") == []


@pytest.mark.parametrize("service,port", [("ssh", 443), ("rdp", 443), ("telnet", 443), ("http", 22)])
def test_a_clients_bytes_name_nothing_of_its_server(service: str, port: int) -> None:
    """A stranger's "SSH-2.0" (an RDP request, a telnet negotiation) sent to the NAS's HTTPS port
    would make the owner's phone's short connections there login attempts, and an HTTP request to
    port 22 would make a brute force there uncounted: a client's first bytes name only its own end."""
    stranger = "203.0.113.99"
    said = AppEvent(T0 - 1, "banner", stranger, 40000, SERVER, port, "tcp", {"service": service, "text": ""})
    phone = "198.51.100.20"
    rec, _ = run([BruteForce], attempts(phone if port == 443 else ATTACKER, SERVER, port, 70), events=[said])
    if port == 443:
        assert rec.by("bruteforce") == []  # the phone's HTTPS stays HTTPS
    else:
        assert rec.blocked_ips == [ATTACKER]  # port 22 stays ssh


def test_benign_look_alikes() -> None:
    flows = sort_flows(
        attempts("192.168.1.5", SERVER, 22, 12, every=200),  # an admin's scripted ssh runs
        attempts("192.168.1.6", SERVER, 22, 40, dur=900, every=60),  # long interactive sessions
        attempts("192.168.1.7", "203.0.113.5", 993, 30, every=120),  # IMAP poller (not a login service)
        [flow(T0 + i, "198.51.100.9", SERVER, 22, dbytes=0, state="S_") for i in range(50)],  # a scan
    )
    rec, _ = run([BruteForce], flows)
    assert rec.by("bruteforce") == []


def triplets(src: str, n: int, every: float, start: float = T0) -> list[Flow]:
    """Git autofetch of 3 repositories: 3 short ssh sessions 1.5 s apart, every `every` s."""
    return sort_flows(*(attempts(src, SERVER, 22, 3, start=start + k * every, every=1.5, dur=0.9)
                        for k in range(n)))


def test_logins_paced_minutes_apart_are_reported_not_blocked() -> None:
    """The office's VS Code fetching 3 repositories of the home Gitea every 180 s: 60 logins an hour
    from one outside address, in runs of 3. Reported (medium: a guesser pacing itself looks like
    this too), blocks no one; the same 60 logins back to back (3 s apart) block."""
    rec, _ = run([BruteForce], triplets(ATTACKER, 20, 180.0))
    found = rec.by("bruteforce")
    assert found and rec.blocked_ips == []
    assert {a.evidence.threat_level for a in found} == {0.5} and max(a.evidence.score for a in found) == 0.5
    assert "paced: its longest run of attempts each within 120s of the one before is 3 (< 20)" in \
        found[0].evidence.description
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, 22, 60, every=3.0, dur=0.9))  # the control
    assert rec.blocked_ips == [ATTACKER]


def test_a_run_of_the_threshold_blocks_after_paced_attempts() -> None:
    """10 attempts 5 minutes apart, then guessing at full speed: the count reaches 20 in a run of
    10 (reported medium), the run reaches 20 (critical, blocked): the paced past hides nothing."""
    flows = attempts(ATTACKER, SERVER, 22, 10, every=300.0) + attempts(ATTACKER, SERVER, 22, 20, start=T0 + 3000)
    rec, _ = run([BruteForce], flows)
    levels = [a.evidence.threat_level for a in rec.by("bruteforce")]
    assert levels == [0.5, 1.0] and rec.blocked_ips == [ATTACKER]


def test_a_guesser_pausing_between_bursts_blocks_at_four_times_the_threshold() -> None:
    """Bursts of 19 attempts 3 s apart, 125 s of rest between them: no run reaches 20, and without a
    bound this was 361 attempts in 56 minutes reported medium, never blocked (a review). Paced
    counts block from 4 x min_attempts (80) on."""
    flows = sort_flows(*(attempts(ATTACKER, SERVER, 22, 19, start=T0 + k * (18 * 3 + 125), sport0=40000 + 19 * k)
                         for k in range(19)))
    rec, _ = run([BruteForce], flows)
    blocking = next(a for a in rec.by("bruteforce") if a.decision.action == "block").evidence
    assert rec.blocked_ips == [ATTACKER] and blocking.description.split(": ")[1].startswith("80 short connections")


def test_cgnat_space_is_no_lan_here() -> None:
    """100.64/10 is local to the other detectors (Tailscale, the ISP's shared space), but an attacker
    on the same ISP behind its CGNAT comes from there: its guessing at the NAS blocks."""
    cgnat = "100.72.14.9"
    rec, _ = run([BruteForce], attempts(cgnat, SERVER, 22, 70))
    assert rec.blocked_ips == [cgnat]


@pytest.mark.parametrize("every,blocked", [(100.0, True), (150.0, False)])
def test_max_gap_is_the_pause_that_ends_a_run(every: float, blocked: bool) -> None:
    """Attempts 100 s apart are one run (blocked at 20); 150 s apart, each its own (reported)."""
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, 22, 24, every=every))
    assert rec.by("bruteforce") and (rec.blocked_ips == [ATTACKER]) is blocked
    cfg = config([BruteForce], **{"bruteforce.max_gap": 200.0})
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, 22, 24, every=every), cfg=cfg)
    assert rec.blocked_ips == [ATTACKER]
    with pytest.raises(ConfigError, match=r"bruteforce\.max_gap"):
        config([BruteForce], **{"bruteforce.max_gap": 0})


def test_long_sessions_lower_confidence() -> None:
    flows = sort_flows(attempts(ATTACKER, SERVER, 22, 20), attempts(ATTACKER, SERVER, 22, 20, dur=600,
                                                                   start=T0 - 0.5))
    rec, _ = run([BruteForce], flows)
    ev = rec.by("bruteforce")[0].evidence
    assert ev.confidence < 0.6 and rec.blocked_ips == []


def test_counted_per_window() -> None:
    flows = attempts(ATTACKER, SERVER, 22, 15, start=T0 + 3500) + attempts(ATTACKER, SERVER, 22, 15,
                                                                          start=T0 + 3600)
    rec, _ = run([BruteForce], flows)
    assert rec.by("bruteforce") == []


def test_extra_ports_option() -> None:
    cfg = config([BruteForce], **{"bruteforce.ports": [2222]})
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, 2222, 25), cfg=cfg)
    assert rec.by("bruteforce")
    with pytest.raises(ConfigError, match=r"bruteforce\.ports"):
        config([BruteForce], **{"bruteforce.ports": ["ssh"]})


def test_bruteforce_capture_end_to_end() -> None:
    """Real packets: the SSH banner on port 2222 is recognised by the decoder and remembered here."""
    from flowgen import DATA, my_detectors, replay_pcap

    rec = replay_pcap(DATA / "bruteforce-ssh.pcap", my_detectors())
    assert rec.blocked_ips == ["198.51.100.77", "203.0.113.50"]
    assert {a.evidence.dst_port for a in rec.by("bruteforce")} == {22, 2222}
    assert {a.evidence.label for a in rec.by("bruteforce")} == {"ssh"}


def test_vnc_is_recognised_by_its_protocol_version_banner() -> None:
    from slipsq.appdecode import service

    assert service(b"RFB 003.008\n") == "vnc"
    port = 5999
    banner = AppEvent(T0 - 1, "banner", SERVER, port, ATTACKER, 40000, "tcp",
                      {"service": service(b"RFB 003.008\n"), "text": "RFB 003.008\n"})
    rec, _ = run([BruteForce], attempts(ATTACKER, SERVER, port, 70), events=[banner])
    assert rec.blocked_ips == [ATTACKER]
    assert rec.by("bruteforce")[0].evidence.label == "vnc"


def test_a_port_check_that_says_nothing_is_no_login(implementation: str) -> None:
    """A monitor's TCP port check of a forwarded ssh port every 60 s: connect, the server's banner, close.
    The client never sends a byte (no PSH of its own); 60 an hour blocked the owner's monitor."""
    monitor = "198.51.100.9"
    checks = [flow(T0 + i * 60, monitor, SERVER, 22, dur=0.05, sbytes=180, dbytes=260, sport=40000 + i,
                   state="SAF_SPAF") for i in range(60)]
    rec, _ = run([BruteForce], checks)
    assert rec.by("bruteforce") == [] and rec.blocked_ips == []
    # the control: the same connections with a word from the client are attempts
    said = [flow(T0 + i * 60, monitor, SERVER, 22, dur=0.05, sbytes=900, dbytes=260, sport=40000 + i,
                 state="SPAF_SPAF") for i in range(60)]
    rec, _ = run([BruteForce], said)
    assert rec.blocked_ips == [monitor]


def test_git_over_ssh_to_a_named_server_is_reported_low_and_never_blocks(implementation: str) -> None:
    """VS Code's git autofetch: every 180 s a short ssh session per repository to github.com, named by
    the house's resolver. 60 an hour is a 'critical' burst from inside; to a named server it is low."""
    laptop, github = "192.168.1.10", "140.82.121.4"
    answer = AppEvent(T0 - 1, "dns", "192.168.1.1", 53, laptop, 40000, "udp",
                      {"query": "github.com", "answers": [github], "rcode": 0, "response": True})
    fetches = [flow(T0 + i * 60, laptop, github, 22, dur=1.0, sbytes=3000, dbytes=4000, sport=41000 + i,
                    state="SPAF_SPAF") for i in range(60)]
    rec, _ = run([BruteForce], fetches, events=[answer])
    found = rec.by("bruteforce")
    assert found and all(a.evidence.threat_level == 0.2 and not a.evidence.may_block for a in found)
    assert "named server (github.com)" in found[-1].evidence.description
    assert rec.blocked_ips == []
    # the control: the same sessions to an address no answer named block the laptop
    rec, _ = run([BruteForce], fetches)
    assert rec.blocked_ips == [laptop]


def test_tls_hellos_never_push_a_login_banner_out(implementation: str) -> None:
    """Every TLS ClientHello is a "banner" event (service tls) since exfiltration asks for them: a busy
    house meets more TLS servers than the banners kept, and they pushed out the ssh banner that names a
    login service moved to port 2222. Another service on a port that is no login port is not kept."""
    banner = AppEvent(T0 - 10, "banner", SERVER, 2222, ATTACKER, 50000, "tcp", {"service": "ssh"})
    hellos = [AppEvent(T0 - 5 + i * 1e-3, "banner", "192.168.1.9", 40000 + i, f"198.18.{i // 250}.{i % 250}", 443,
                       "tcp", {"service": "tls"}) for i in range(300)]
    cfg = config([BruteForce], bruteforce__max_banners=100)
    rec, eng = run([BruteForce], attempts(ATTACKER, SERVER, 2222, 25), [banner, *hellos], cfg=cfg)
    assert rec.blocked_ips == [ATTACKER]
    det = next(d for d in eng.engine.detectors if isinstance(d, BruteForce))
    assert det.service(SERVER, 2222) == "ssh" and len(det.banners) == 1  # the server's end: its sender
    # a server's banner of another service on a login port is still kept: it is not that login service
    rdp_http = AppEvent(T0, "banner", SERVER, 3389, "192.168.1.9", 40000, "tcp", {"service": "http"})
    _, eng = run([BruteForce], [], [rdp_http], cfg=cfg)
    det = next(d for d in eng.engine.detectors if isinstance(d, BruteForce))
    assert det.service(SERVER, 3389) is None
