"""slipsq.output.syslog: RFC 5424 lines, read back by an independent parser (the
`syslog-rfc5424-parser` package, a grammar of the RFC), hostile text included; and the sender, over
real UDP and TCP sockets on loopback."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from syslog_rfc5424_parser import SyslogMessage

from slipsq.output.syslog import (
    FACILITIES,
    SD_ID,
    SyslogSender,
    header_token,
    octet_frame,
    parse_target,
    sd_params,
    sd_value,
    syslog_line,
    timestamp,
)
from slipsq.records import Alert
from tests.flowgen import bundled_alerts, hostile_alerts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)  # RFC 5424 6.3.3: \" \\ \]


def _parse(line: str) -> SyslogMessage:
    return SyslogMessage.parse(line)


# RFC 5424 6.3, from its ABNF: SD-ELEMENT = "[" SD-ID *(SP PARAM-NAME "=" %d34 PARAM-VALUE %d34) "]",
# where a PARAM-VALUE escapes '"', '\' and ']' with a backslash. The parser package's grammar takes
# an escaped backslash before the closing quote (a value ending in '\') for an escaped quote and
# refuses a correct line; such lines are checked against this grammar alone.
_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'
_LINE = re.compile(r'<\d{1,3}>1 \S+ \S+ \S+ \S+ (\S+) \[(\S+?)((?: [^ =\]"]{1,32}="' + _VALUE + r'")*)\] (.*)\Z', re.S)
_PARAM = re.compile(r' ([^ =\]"]{1,32})="(' + _VALUE + r')"')
_PARSER_BUG = re.compile(r'(?<!\\)(?:\\\\)+"')


def _rfc_parse(line: str) -> tuple[str, str, dict[str, str], str]:
    """(msgid, SD-ID, params, msg) by the RFC's grammar; AssertionError when the line is not RFC 5424."""
    m = _LINE.match(line)
    assert m is not None, f"not RFC 5424: {line!r}"
    return m.group(1), m.group(2), dict(_PARAM.findall(m.group(3))), m.group(4)


def test_real_alerts_parse_back_field_by_field() -> None:
    for a in bundled_alerts():
        line = syslog_line(a, "gw.home.arpa", 4242, FACILITIES["local5"])
        m = _parse(line)
        assert int(m.facility) == FACILITIES["local5"]
        assert int(m.severity) == (4 if a.decision.action == "block" or a.evidence.threat_level >= 0.5 else
                                   5 if a.evidence.threat_level >= 0.2 else 6)
        assert (m.hostname, m.appname, m.procid) == ("gw.home.arpa", "slipsq", 4242)
        assert m.msgid == ("block" if a.decision.action == "block" else "alert")
        sd = {k: _unescape(v) for k, v in m.sd[SD_ID].items()}
        d = a.to_dict()
        assert sd["detector"] == d["detector"] and sd["src"] == d["src_ip"] and sd["dst"] == d["dst_ip"]
        assert sd["score"] == str(d["score"]) and sd["offender"] == d["offender"]
        if a.decision.action == "block":
            assert sd["blocked"] == d["blocked_ip"]
        assert m.msg == a.to_text()
        assert m.timestamp == timestamp(a.decided_ts)


@settings(max_examples=300, deadline=None)
@given(hostile_alerts())
def test_hostile_text_never_breaks_a_message(alert: Alert) -> None:
    line = syslog_line(alert, "gw", 1)
    assert "\n" not in line and "\r" not in line  # one alert, one line, whatever a domain name holds
    controls = re.compile(r"[\x00-\x1f\x7f]")
    line.encode("utf-8")  # a lone surrogate (a JSON input's "\udcff") must not stop the line being sent
    # and it arrives as the text \udcff
    want = {k: controls.sub(" ", v.encode("utf-8", "backslashreplace").decode()) for k, v in sd_params(alert)}
    msgid, sd_id, params, msg = _rfc_parse(line)
    assert sd_id == SD_ID and {k: _unescape(v) for k, v in params.items()} == want
    assert msg == controls.sub(" ", alert.to_text()) and msgid in ("alert", "block")
    if not _PARSER_BUG.search(line):  # and the independent parser agrees
        m = _parse(line)
        assert {k: _unescape(v) for k, v in m.sd[SD_ID].items()} == want
        assert m.msg == msg and m.msgid == msgid


def test_a_value_ending_in_a_backslash_is_rfc_5424() -> None:
    """The case the parser package gets wrong: '\\' closes the value, the next parameter follows."""
    line = '<30>1 2001-09-09T01:46:40Z gw slipsq 1 alert [slipsq@32473 detector="\\\\" action="alert"] x'
    assert _PARSER_BUG.search(line)
    assert _rfc_parse(line)[2] == {"detector": "\\\\", "action": "alert"}
    assert sd_value("\\") == "\\\\"


@pytest.mark.parametrize(("text", "want"), [('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("a]b", "a\\]b"),
                                            ("line\nbreak\x00", "line break ")])
def test_sd_values_are_escaped(text: str, want: str) -> None:
    assert sd_value(text) == want


def test_header_tokens_are_printable_ascii() -> None:
    assert header_token("gate way\x00é", 255) == "gateway"
    assert header_token("", 48) == "-" and header_token("x" * 300, 255) == "x" * 255


def test_timestamp_rounds_to_microseconds_in_utc() -> None:
    assert timestamp(1_700_000_000.9999996) == "2023-11-14T22:13:21.000000Z"
    assert timestamp(0.5) == "1970-01-01T00:00:00.500000Z"


@pytest.mark.parametrize(("url", "want"), [("udp://127.0.0.1", ("udp", "127.0.0.1", 514)),
                                           ("tcp://logs.home.arpa:6514", ("tcp", "logs.home.arpa", 6514)),
                                           ("udp://[::1]:5514", ("udp", "::1", 5514))])
def test_targets(url: str, want: tuple[str, str, int]) -> None:
    assert parse_target(url) == want


@pytest.mark.parametrize("url", ["127.0.0.1:514", "http://x", "udp://", "udp://h:99999", "tcp://h/path", "udp://h:x"])
def test_bad_targets_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="udp://HOST"):
        parse_target(url)


def _sample() -> Alert:
    return next(a for a in bundled_alerts() if a.decision.action == "block")


def test_udp_sender_sends_one_datagram_per_alert() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        sender = SyslogSender(f"udp://127.0.0.1:{server.getsockname()[1]}", "gw", 7)
        try:
            for a in bundled_alerts()[:3]:
                sender.alert(a)
            got = [server.recv(65535).decode() for _ in range(3)]
        finally:
            sender.close()
    assert [_parse(g).msg for g in got] == [a.to_text() for a in bundled_alerts()[:3]]
    assert sender.counters() == {"sent": 3, "failed": 0, "dropped": 0}


@pytest.fixture
def tcp_server() -> Iterator[tuple[int, Callable[[], bytes]]]:
    """A loopback TCP listener for one client, and a function that waits until that client closed
    its connection and returns every byte it sent (read right after the client's close, the
    listener's thread may not have received the last bytes yet)."""
    got: list[bytes] = []
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.settimeout(10)
        with conn:
            while chunk := conn.recv(65536):
                got.append(chunk)

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def received() -> bytes:
        t.join(10)
        assert not t.is_alive(), "the client did not close its connection within 10 s"
        return b"".join(got)

    yield srv.getsockname()[1], received
    t.join(10)
    srv.close()


def test_tcp_sender_frames_by_octet_count(tcp_server: tuple[int, Callable[[], bytes]]) -> None:
    port, received = tcp_server
    alerts = bundled_alerts()[:5]
    sender = SyslogSender(f"tcp://127.0.0.1:{port}", "gw", 7)
    for a in alerts:
        sender.alert(a)
    sender.close()  # sends what is queued, then closes the connection
    data = received()
    frames = []
    while data:  # RFC 6587 3.4.1: MSG-LEN SP SYSLOG-MSG
        length, _, rest = data.partition(b" ")
        frames.append(rest[:int(length)].decode())
        data = rest[int(length):]
    assert frames == [syslog_line(a, "gw", 7) for a in alerts]
    assert octet_frame("é").startswith(b"2 ")  # octets, not characters


def test_a_dead_server_never_holds_up_the_caller() -> None:
    # nothing listens on this port: the TCP connect fails at once; the sender counts the loss and
    # drops messages for RETRY_EVERY instead of trying again per alert
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logged: list[str] = []
    sender = SyslogSender(f"tcp://127.0.0.1:{port}", "gw", 7, log=logged.append, maxlen=16)
    a = _sample()
    longest = 0.0
    for _ in range(500):
        t0 = time.perf_counter()
        sender.alert(a)
        longest = max(longest, time.perf_counter() - t0)
    sender.close()
    c = sender.counters()
    assert c["sent"] == 0 and c["failed"] + c["dropped"] == 500
    assert len(logged) == 1 and "failed" in logged[0]
    print(f"longest alert() call with a dead syslog server: {longest * 1e3:.2f} ms")
