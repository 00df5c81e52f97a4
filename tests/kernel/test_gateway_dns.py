"""DNS to the gateway's own resolver (dns.queue_gateway), on a real gateway: a LAN client tunnels
through the resolver on the gateway (a UDP DNS server in its namespace, as dnsmasq would be); the
queries arrive in INPUT and the answers leave in OUTPUT, never in FORWARD. With the DNS diversion
slipsq sees them, and the tunnel gets the client blocked in the kernel; without it (the control)
slipsq sees nothing of it."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import CLIENT_A, Lab

pytestmark = pytest.mark.kernel

GW_LAN = "10.71.1.1"  # the gateway's address on client A's side

# answers every query with one record of its type: an address for A, a text for TXT (as a
# forwarding resolver would, after asking upstream: for a tunnel, the attacker's name server)
RESOLVER = r"""
import os, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.71.1.1", 53))
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 12:
        continue
    end = q.index(b"\0", 12) + 5  # the question: the name, its type and class
    qtype = struct.unpack("!H", q[end - 4:end - 2])[0]
    head = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    text = os.urandom(16).hex().encode()
    data = socket.inet_aton("10.71.3.3") if qtype == 1 else bytes([len(text)]) + text
    answer = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60 if qtype == 1 else 0, len(data)) + data
    s.sendto(head + q[12:end] + answer, peer)
"""

# dnscat2-like: a fresh hex label under one domain per TXT query, one at a time; stops after 5
# queries in a row go unanswered (the client is blocked) or after `n`; prints how many were answered
TUNNEL = r"""
import os, socket, struct, sys
n, answered, missed = int(sys.argv[2]), 0, 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
for i in range(n):
    labels = [os.urandom(20).hex().encode(), b"tun", b"c2-updates", b"net"]
    name = b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
    s.sendto(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 16, 1), (sys.argv[1], 53))
    try:
        s.recv(512)
        answered, missed = answered + 1, 0
    except socket.timeout:
        missed += 1
        if missed == 5:
            break
print(answered)
"""

CONFIG = {"judge.block_duration": 600.0, "output.json": True}


def stopped_alerts(s: Slipsq) -> list[dict[str, object]]:
    """Stop the daemon; every alert it wrote (its standard output, read to the end)."""
    assert s.proc is not None
    s.proc.send_signal(signal.SIGTERM)
    out, _ = s.proc.communicate(timeout=15)
    assert s.proc.returncode == 0
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("queue_gateway", [True, False])
def test_a_tunnel_through_the_gateways_own_resolver_is_seen_and_blocked(
        lab: Lab, tmp_path: Path, backend: str, queue_gateway: bool) -> None:
    lab.popen(lab.gw, sys.executable, "-c", RESOLVER)
    s = Slipsq(lab, tmp_path / "state", backend, config={**CONFIG, "dns.queue_gateway": queue_gateway})
    s.start()
    rules = s.iptables()
    assert ("slipsq queue 5 dns" in rules) is queue_gateway, rules
    assert s.status()["dns_diversion"] is queue_gateway  # `slipsq status` says so
    said = s.cli("status").stdout
    assert ("DNS to and from the gateway too" in said) is queue_gateway, said
    ip6 = lab.sh(lab.gw, f"ip6tables-{backend}", "-t", "security", "-S").stdout
    assert ip6.count("slipsq queue 5 dns") == (2 if queue_gateway else 0), ip6
    if queue_gateway:  # the LAN's queries in, the answers out; never the gateway's own (loopback)
        assert any("-A INPUT ! -i lo -p udp" in r and "--dport 53" in r and "NFQUEUE" in r for r in rules.splitlines())
        assert any("-A OUTPUT ! -o lo -p udp" in r and "--sport 53" in r and "NFQUEUE" in r
                   for r in rules.splitlines())
    answered = int(lab.sh(lab.ns["a"], sys.executable, "-c", TUNNEL, GW_LAN, "700", timeout=120).stdout)
    if queue_gateway:
        # dnstunnel blocks at the 500th name; the kernel drops the client's queries from then on
        assert wait_for(lambda: CLIENT_A in s.set_members(), timeout=15) is not None
        assert 400 <= answered < 700, answered
    else:
        assert answered == 700  # slipsq never saw the queries: nothing to judge
        assert CLIENT_A not in s.set_members()
    # a reload that turns the setting over puts the rules in or takes them out
    s.config_path.write_text(s.config_path.read_text().replace(
        f"queue_gateway = {str(queue_gateway).lower()}", f"queue_gateway = {str(not queue_gateway).lower()}"))
    assert s.proc is not None
    s.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: ("slipsq queue 5 dns" in s.iptables()) is not queue_gateway, timeout=15) is not None
    found = [a for a in stopped_alerts(s) if a.get("detector") == "dnstunnel"]
    if queue_gateway:
        assert found and found[-1]["action"] == "block" and found[-1]["offender"] == CLIENT_A, found[-2:]
    else:
        assert found == []
    # the DNS diversion goes with the FORWARD one, IPv6 too (python-iptables wrote IPv6 interface
    # masks ip6tables could not match: the rule stayed, and `slipsq rules remove` failed)
    ip6 = lab.sh(lab.gw, f"ip6tables-{backend}", "-t", "security", "-S").stdout
    assert "slipsq queue 5" not in s.iptables() and "slipsq queue 5" not in ip6, ip6
