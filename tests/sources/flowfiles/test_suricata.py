"""Suricata eve.json reader: flow events, DNS v1 and v2 answers and queries, other events counted, bad
events counted with file and line, the shared eve sample, and property tests."""
# ruff: noqa: E501  (eve events are long)

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq.errors import InputError
from slipsq.flow import AppEvent, Flow
from slipsq.output.binetflow import format_flow
from slipsq.sources.flowfiles import detect_format, open_flow_source
from slipsq.sources.flowfiles.suricata import SuricataSource

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]  # the test machine may be busy

FLOW = {"timestamp": "2021-06-06T15:57:37.272281+0200", "flow_id": 1, "event_type": "flow", "src_ip": "91.238.203.56",
        "src_port": 48938, "dest_ip": "192.168.1.129", "dest_port": 445, "proto": "TCP",
        "flow": {"pkts_toserver": 2, "pkts_toclient": 3, "bytes_toserver": 120, "bytes_toclient": 180,
                 "start": "2021-06-06T17:34:31.140759+0200", "end": "2021-06-06T17:34:31.141012+0200", "age": 0,
                 "state": "closed", "reason": "timeout", "alerted": False}}
DNS_BASE = {"timestamp": "2021-06-06T16:26:27.442512+0200", "flow_id": 2, "event_type": "dns", "src_ip": "192.168.1.129",
            "src_port": 35790, "dest_ip": "192.168.1.1", "dest_port": 53, "proto": "UDP"}
V2 = {**DNS_BASE, "dns": {"version": 2, "type": "answer", "id": 2, "rrname": "www.Google.com", "rrtype": "A",
                          "rcode": "NOERROR", "answers": [{"rrname": "www.google.com", "rrtype": "CNAME", "rdata": "g.co"},
                                                          {"rrname": "g.co", "rrtype": "A", "rdata": "172.217.23.196"}],
                          "grouped": {"A": ["172.217.23.196"], "CNAME": ["g.co"]}}}
V1 = [{**DNS_BASE, "dns": {"type": "query", "id": 9, "rrname": "x.example", "rrtype": "AAAA", "tx_id": 0}},
      {**DNS_BASE, "dns": {"type": "answer", "id": 9, "rrname": "x.example", "rrtype": "AAAA", "ttl": 60,
                           "rdata": "2001:db8::7", "rcode": "NOERROR"}},
      {**DNS_BASE, "dns": {"type": "answer", "id": 10, "rrname": "nx.example", "rcode": "NXDOMAIN"}}]


def write(tmp_path: Path, events: list[object]) -> str:
    path = tmp_path / "eve.json"
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    return str(path)


def test_flow_event_fields(tmp_path: Path) -> None:
    icmp = {**FLOW, "proto": "ICMP", "icmp_type": 8, "icmp_code": 0, "src_port": None, "dest_port": None}
    del icmp["src_port"], icmp["dest_port"]
    path = write(tmp_path, [FLOW, icmp])
    assert detect_format(path) == "suricata"
    source = open_flow_source(path)
    a, b = list(source)
    assert isinstance(a, Flow) and isinstance(b, Flow) and source.format == "suricata"
    start = datetime(2021, 6, 6, 15, 34, 31, 140759, tzinfo=UTC).timestamp()
    assert (a.start, a.end) == (start, pytest.approx(start + 0.000253))
    assert (a.proto, a.saddr, a.sport, a.daddr, a.dport) == ("tcp", "91.238.203.56", 48938, "192.168.1.129", 445)
    assert (a.spkts, a.dpkts, a.sbytes, a.dbytes, a.state, a.closed_by) == (2, 3, 120, 180, "closed", "file")
    assert (b.proto, b.sport, b.dport) == ("icmp", 8, 0)


def test_dns_v2_v1_and_other_events(tmp_path: Path) -> None:
    alert = {**FLOW, "event_type": "alert", "alert": {"signature": "x"}}
    path = write(tmp_path, [V2, *V1, alert, {**FLOW, "event_type": "stats"}])
    source = open_flow_source(path)
    v2, q, v1, nx = list(source)
    assert isinstance(v2, AppEvent) and isinstance(q, AppEvent) and isinstance(v1, AppEvent)
    assert isinstance(nx, AppEvent)
    # an answer is sent by the server
    assert (v2.kind, v2.saddr, v2.sport, v2.daddr, v2.dport, v2.proto) == ("dns", "192.168.1.1", 53, "192.168.1.129",
                                                                          35790, "udp")
    assert v2.data == {"query": "www.google.com", "qtype": 1, "answers": ["172.217.23.196"], "rcode": 0,
                       "response": True}
    assert (q.saddr, q.data["response"], q.data["qtype"], q.data["answers"]) == ("192.168.1.129", False, 28, [])
    assert v1.data["answers"] == ["2001:db8::7"] and v1.data["response"] is True
    assert nx.data["rcode"] == 3 and nx.data["answers"] == []
    assert source.counts["other_events"] == 2 and source.counts["app_events"] == 4
    assert source.counts["flows"] == 0 and source.counts["rows"] == 6


def test_bad_events_are_counted_with_line(tmp_path: Path) -> None:
    bad_ip = {**FLOW, "src_ip": "999.1.1.1"}
    no_flow = {k: v for k, v in FLOW.items() if k != "flow"}
    naive = {**FLOW, "flow": {**FLOW["flow"], "start": "2021-06-06T17:34:31"}}  # type: ignore[dict-item]
    path = write(tmp_path, [FLOW, bad_ip, no_flow, "{oops", naive, "42", {**V2, "dns": {"type": "what"}}, FLOW])
    source = open_flow_source(path)
    items = list(source)
    assert len(items) == 2 and source.counts["bad_rows"] == 6
    assert source.problems[0] == f"{path}:2: bad address '999.1.1.1'"
    assert source.problems[1] == f"{path}:3: missing field 'flow'"


def test_not_eve_json(tmp_path: Path) -> None:
    path = write(tmp_path, [{"hello": 1}])
    with pytest.raises(InputError, match="not a flow file"):
        open_flow_source(path)
    with pytest.raises(InputError, match=r"not a Suricata eve\.json"):
        open_flow_source(path, "suricata")


def test_shared_eve_sample(shared_data: Path) -> None:
    path = shared_data / "suricata" / "eve-sample.json"
    kinds = [json.loads(line)["event_type"] for line in path.read_text().splitlines()]
    source = open_flow_source(str(path))
    items = list(source)
    c = source.counts
    assert c["bad_rows"] == 0 and c["rows"] == len(kinds)
    assert c["flows"] == kinds.count("flow") == sum(isinstance(i, Flow) for i in items)
    assert c["other_events"] == len(kinds) - kinds.count("flow") - kinds.count("dns")
    answers = [i for i in items if isinstance(i, AppEvent) and i.data["response"]]
    google = next(a for a in answers if a.data["query"] == "www.google.com")
    assert google.data["answers"] == ["172.217.23.196"] and google.saddr == "192.168.1.1"
    myedimax = next(a for a in answers if a.data["query"] == "www.myedimax.com")
    assert myedimax.data["answers"] == ["122.248.252.67"]  # CNAMEs are not addresses


# text with a lone surrogate now and then: JSON may escape one ("\udcff"), and hypothesis's text() never draws one
TEXT = st.tuples(st.text(max_size=6), st.sampled_from(["", "", "\udcff", "\ud800"]), st.text(max_size=6)).map("".join)
EVE_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                          max_leaves=8)


@st.composite
def mutated_event(draw: st.DrawFn) -> dict[str, object]:
    event = json.loads(json.dumps(draw(st.sampled_from([FLOW, V2, *V1]))))
    for _ in range(draw(st.integers(1, 3))):
        target = event
        if draw(st.booleans()) and isinstance(event.get("flow" if "flow" in event else "dns"), dict):
            target = event["flow" if "flow" in event else "dns"]
        if not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(EVE_VALUES)
    return event  # type: ignore[no-any-return]


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW_OK)
@given(st.lists(st.one_of(mutated_event().map(json.dumps), st.text(max_size=40)), max_size=8))
def test_random_events_never_crash(lines: list[str]) -> None:
    source = SuricataSource("mem", json.dumps(FLOW), io.StringIO("\n".join(lines) + "\n"))
    try:
        items = list(source)
    except InputError:
        return
    c = source.counts
    assert c["flows"] + c["app_events"] == len(items) >= 1
    assert c["rows"] >= c["flows"] + c["bad_rows"] + c["other_events"]
    for item in items:  # every text a flow or event carries can be written to a UTF-8 file
        text = format_flow(item) if isinstance(item, Flow) else json.dumps(item.data, ensure_ascii=False)
        text.encode("utf-8")


@pytest.mark.parametrize("fmt", ["auto", "zeek", "suricata"])
def test_too_deeply_nested_first_line_is_an_input_error(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, ['{"a":' * 100_000])  # json.loads raises RecursionError, not ValueError
    with pytest.raises(InputError):
        open_flow_source(path, fmt)


def test_lone_surrogates_are_written_as_text_not_a_crash(tmp_path: Path) -> None:
    """A JSON string may hold an escaped lone surrogate ("\\udcff"), which no UTF-8 output can write:
    it reads as the text \\udcff, so an address holding one is a bad row and any other field is kept."""
    flow = json.loads(json.dumps(FLOW))
    flow["flow"]["state"] = "new\udcff"
    bad = {**json.loads(json.dumps(FLOW)), "src_ip": "10.0.0.\udcff"}
    source = SuricataSource("mem", json.dumps(FLOW), io.StringIO("\n".join(map(json.dumps, [FLOW, flow, bad])) + "\n"))
    items = list(source)
    assert "new\\udcff" in [i.state for i in items if isinstance(i, Flow)]
    assert source.counts["bad_rows"] == 1 and "bad address '10.0.0.\\\\udcff'" in source.problems[0]
