"""The daemon's side of `--queue A:B` (slipsq.multiqueue) without a kernel: the queue argument, the
RemoteTable the engine drives, and the claim the design rests on: packets split over two flow
tables by address pair (as the kernel's --queue-balance hash does), shipped over the wire and judged
in one engine, give the same decisions as one table. The real processes and queues are tested in
tests/kernel/test_queue_workers.py."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipsq import mqwire, runmode
from slipsq.allow import AllowList
from slipsq.engine import Engine, make_table
from slipsq.errors import UsageError
from slipsq.multiqueue import RemoteTable, parse_queue, queue_text
from slipsq.records import Alert, Block
from slipsq.verdict.backends import RuleSpec, _restore_join
from slipsq.verdict.firewall import diversion_tag
from tests.helpers import ACK, RST, SYN, tcp, udp

LINKTYPE_RAW = 101
SCANNER, CLIENT = "10.9.0.66", "10.9.0.10"


@pytest.mark.parametrize("text,want", [("0", 0), ("7", 7), ("0:1", (0, 1)), (" 2:5 ", (2, 5)), ("65535", 65535)])
def test_queue_argument(text: str, want: Any) -> None:
    assert parse_queue(text) == want
    assert parse_queue(queue_text(want)) == want


@pytest.mark.parametrize("text,why", [
    ("1:0", "A < B"), ("3:3", "A < B"), ("x", "N or A:B"), ("0:y", "N or A:B"), ("-1", "0-65535"),
    ("0:65536", "0-65535"), ("0:64", "at most 64"), ("", "N or A:B")])
def test_bad_queue_arguments_are_one_usage_error(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_queue(text)


@given(st.integers(0, 65535), st.integers(1, 63))
def test_every_range_round_trips(first: int, more: int) -> None:
    q = (first, first + more)
    if q[1] > 65535:
        with pytest.raises(UsageError):
            parse_queue(queue_text(q))
    else:
        assert parse_queue(queue_text(q)) == q


def test_the_balance_rule_and_its_tag() -> None:
    spec = RuleSpec("FORWARD", "NFQUEUE", diversion_tag((0, 3)), queue=(0, 3))
    assert _restore_join(spec.args()) == ('-m comment --comment "slipsq queue 0:3" -j NFQUEUE '
                                          "--queue-balance 0:3 --queue-bypass")
    assert diversion_tag(2) == "slipsq queue 2"  # the single queue's rule is unchanged


def test_remote_table_collects_ops_in_order_and_knows_its_state() -> None:
    t = RemoteTable()
    t.set_app_kinds(frozenset({"dns", "tls"}))
    for ip in ("192.0.2.1", "192.0.2.2"):
        t.block(ip)
    t.block("192.0.2.1")  # already blocked: no op
    t.unblock("192.0.2.9")  # not blocked: no op
    t.unblock("192.0.2.1")
    assert t.take_ops() == [("kinds", ["dns", "tls"]), ("block", ["192.0.2.1", "192.0.2.2"]),
                            ("unblock", ["192.0.2.1"])]
    assert t.take_ops() == []
    assert t.state_ops() == [("block", ["192.0.2.2"]), ("kinds", ["dns", "tls"])]
    t.worker_tables = {0: {"packets": 5, "flows_open": 2}, 1: {"packets": 7, "flows_open": 1}}
    assert t.stats() == {"packets": 12, "flows_open": 3}


def balance(pkt: bytes) -> int:
    """Which of two queues a packet goes to: a hash over the address pair and protocol, the same for
    both directions (the kernel's nfqueue_hash; its jhash seed is random, any symmetric hash will do)."""
    a, b, proto = pkt[12:16], pkt[16:20], pkt[9]
    return zlib.crc32(min(a, b) + max(a, b) + bytes([proto])) % 2


def traffic() -> list[tuple[float, bytes]]:
    """A horizontal scan of 40 hosts, a vertical scan of 300 ports of one host (refused), and a
    client's ordinary connections and DNS, over 90 seconds."""
    t0, out = 1_700_000_000.0, []
    for i in range(40):
        dst = f"10.9.1.{i + 1}"
        out.append((t0 + i * 0.2, tcp(SCANNER, 40000 + i, dst, 23, SYN)))
    for p in range(1, 301):
        ts = t0 + 10 + p * 0.05
        out.append((ts, tcp(SCANNER, 50000, "10.9.2.7", p, SYN)))
        out.append((ts + 0.001, tcp("10.9.2.7", p, SCANNER, 50000, RST | ACK)))
    for i in range(30):
        ts, dst = t0 + i * 3.0, f"10.9.3.{i % 5 + 1}"
        out.append((ts, tcp(CLIENT, 30000 + i, dst, 443, SYN)))
        out.append((ts + 0.01, tcp(dst, 443, CLIENT, 30000 + i, SYN | ACK)))
        out.append((ts + 0.02, tcp(CLIENT, 30000 + i, dst, 443, ACK, b"x" * 200)))
        out.append((ts + 0.5, tcp(CLIENT, 30000 + i, dst, 443, RST | ACK)))
        out.append((ts + 0.6, udp(CLIENT, 5353, "10.9.3.53", 53, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 6)))
    return sorted(out, key=lambda x: x[0])


def engine(table: Any = None) -> Engine:
    cfg = runmode.load_config(None, {"flowtable.tcp_closed_linger": 0.5, "allow.own_addresses": False})
    return Engine(cfg, allow=AllowList(), table=table)


def decisions(commands: list[Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for c in commands:
        if isinstance(c, Alert):
            out.append(("alert", c.evidence.detector, c.evidence.offender, c.decision.action))
        elif isinstance(c, Block):
            out.append(("block", c.ip, c.by))
    return sorted(out)


def test_two_tables_over_the_wire_decide_what_one_table_decides() -> None:
    pkts = traffic()
    end = pkts[-1][0] + 400  # past every timeout: every flow closed

    one = engine()
    got_one = []
    for ts, p in pkts:
        one.table.feed(p, ts, LINKTYPE_RAW)
        got_one += one.advance(ts)
    got_one += one.advance(end)

    remote = RemoteTable()
    two = engine(remote)
    cfg = two.config
    workers = [make_table(cfg), make_table(cfg)]
    for w in workers:
        w.set_app_kinds(remote.kinds)
    sizes = []

    def ship(now: float, tick: bool) -> None:
        for w in workers:
            if tick:
                w.expire(now)
            for m in mqwire.encode_batches(w.pop_closed(), w.pop_app(), None):
                sizes.append(len(m))
                msg = mqwire.loads(m)
                remote.app.extend(msg[2])
                remote.closed.extend(mqwire.flows_of(msg))

    got_two = []
    for ts, p in pkts:
        workers[balance(p)].feed(p, ts, LINKTYPE_RAW)
        ship(ts, False)
        got_two += two.advance(ts)
        for op, ips in remote.take_ops():  # blocks reach both workers' tables, as WorkerPool sends them
            for w in workers:
                for ip in ips if op in ("block", "unblock") else ():
                    getattr(w, op)(ip)
    for now in (end - 1, end):
        ship(now, True)
        got_two += two.advance(now)

    assert {balance(p) for _, p in pkts} == {0, 1}  # the traffic really was split
    d1, d2 = decisions(got_one), decisions(got_two)
    assert ("block", SCANNER, "judge") in d1  # the scans were found and judged
    assert d2 == d1
    assert two.counters.flows == one.counters.flows
    assert all(w.is_blocked(SCANNER) for w in workers)


@pytest.mark.parametrize("args,says", [
    (["--queue", "1:0"], "--queue A:B needs A < B"),
    (["--queue", "zero"], "--queue takes N or A:B"),
    (["--queue", "0:1", "replay", "x.pcap"], "cannot be combined with 'replay'"),
])
def test_the_cli_refuses_a_bad_queue_with_one_line(args: list[str], says: str) -> None:
    from tests.test_replay_cli import one_clear_line, slipsq

    one_clear_line(slipsq(*args), 2, says)


@pytest.mark.parametrize("v6", [False, True])
def test_a_worker_reads_an_init_with_every_block_the_judge_allows(v6: bool) -> None:
    """judge.max_blocks (65,536) active blocks reach a starting worker whole, over the real kind of
    socket: a single init message of them was longer than the worker reads (it came truncated, the
    worker could not start, and its queue stayed open to every blocked address)."""
    import socket
    import threading

    from slipsq.mqworker import QueueWorker
    from slipsq.multiqueue import SOCK_BUF, init_ops

    t = RemoteTable()
    ips = [f"2001:db8:ffff:ffff:ffff:ffff:{i >> 16:x}:{i & 0xFFFF:x}" if v6 else
           f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}" for i in range(65_536)]
    for ip in ips:
        t.block(ip)
    t.set_app_kinds(frozenset({"dns"}))
    daemon, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with daemon, worker:
        for s in (daemon, worker):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
        messages = mqwire.ops(init_ops(t, {"flowtable.max_flows": 1000}))

        def send_all() -> None:
            for m in messages:
                daemon.sendall(m)

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()  # (a thread: without root's buffer sizes they would not all fit at once)
        init = QueueWorker(worker, 0, 1024).read_init()
        sender.join(5)
    blocked = [ip for op, arg in init if op == "block" for ip in arg]
    assert blocked == sorted(ips) and ("kinds", ["dns"]) in init
    assert init[-1] == ("config", {"flowtable.max_flows": 1000})


def test_a_worker_keeps_a_bounded_backlog_and_sends_the_rest_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon stops reading: the worker never waits, keeps at most MAX_BACKLOG_BYTES (oldest let
    go, counted), and once the daemon reads again the rest arrives whole and in order."""
    import socket

    from slipsq import mqworker

    monkeypatch.setattr(mqworker, "MAX_BACKLOG_BYTES", 64 * 1024)
    daemon, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with daemon, worker:
        worker.setblocking(False)
        w = mqworker.QueueWorker(worker, 0, 1024)
        sent = [mqwire.dumps(("error", f"{i:06d}" + "x" * 4000)) for i in range(400)]  # ~1.6 MB
        for m in sent:
            w.send(m)  # never blocks (the socket's buffer fills after some of them)
        assert w.backlog_bytes <= 64 * 1024 and w.backlog_bytes == sum(map(len, w.backlog))
        assert w.lost_messages > 0
        daemon.settimeout(1.0)
        got: list[bytes] = []
        while True:
            w.flush_backlog()
            try:
                got.append(daemon.recv(mqwire.MAX_MESSAGE))
            except TimeoutError:
                break
        assert not w.backlog and w.backlog_bytes == 0
        assert len(got) + w.lost_messages == len(sent)
        # what came is what was sent, in order: the socket's first part, then the backlog's newest
        assert got == [m for m in sent if m in set(got)] and got[-1] == sent[-1]
