"""Timelines (slipsq.output.timeline) and the activity log they are built from (slipsq.output.activity):
a generated beacon capture through the real engine, its activity log, and the story told of it."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq import runmode
from slipsq.output import timeline
from slipsq.output.activity import ActivityWriter, Reader, RotatingActivityLog, log_files
from slipsq.output.timeline import build, hosts_with_evidence, printable, render
from slipsq.sources.pcap import replay_capture
from tools import gen_corpus
from tools.gencapture import write_capture


@pytest.fixture(scope="module")
def beacon_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict[str, str]]:
    """A 10 s HTTPS beacon (gen_corpus) replayed by the real engine: its activity records, and the
    letters the Markov detector itself computed per 4-tuple."""
    cap = tmp_path_factory.mktemp("beacon") / "b.pcap"
    write_capture(gen_corpus.BY_NAME["beacon-10s-1%"].build(random.Random(1)), cap)
    buf = io.StringIO()
    cfg = runmode.load_config(None)
    run = runmode.Offline(runmode.build_engine(cfg, runmode.load_engine_models(None, cfg), runmode.make_allow(cfg)),
                          [ActivityWriter(buf)])
    replay_capture(run, str(cap))
    run.finish()
    det = next(d for d in run.engine.detectors if d.name == "stratosphere")
    letters = {f"{t['src_ip']}>{t['dst_ip']}:{t['dst_port']}/{t['proto']}": t["letters"]
               for t in det.tuples()}  # type: ignore[attr-defined]
    return [json.loads(line) for line in buf.getvalue().splitlines()], letters


def test_the_activity_log_holds_what_a_timeline_needs(beacon_run: tuple[list[dict], dict[str, str]]) -> None:
    records, _ = beacon_run
    kinds = {r["k"] for r in records}
    assert {"flow", "dns", "alert", "block"} <= kinds
    dns = [r for r in records if r["k"] == "dns" and r["name"] == "cdn-edge.example.net"]
    assert dns and dns[0]["host"] == gen_corpus.VICTIM and gen_corpus.CNC in dns[0]["answers"]


def test_the_beacon_story(beacon_run: tuple[list[dict], dict[str, str]]) -> None:
    records, letters = beacon_run
    hosts = hosts_with_evidence(records)
    assert {gen_corpus.CNC, gen_corpus.VICTIM} <= hosts
    stories = build(records, hosts)
    victim, cnc = stories[gen_corpus.VICTIM], stories[gen_corpus.CNC]
    key = (gen_corpus.VICTIM, gen_corpus.CNC, 443, "tcp")
    t = victim.tuples[key]
    assert cnc.tuples[key] is not t and cnc.tuples[key].flows == t.flows  # the same tuple from both ends
    flows = [r for r in records if r["k"] == "flow" and (r["src"], r["dst"], r["dport"]) == key[:3]]
    assert t.flows == len(flows) and t.sbytes == sum(r["sbytes"] for r in flows)
    # the letters are the ones the detector matched, recomputed from the logged flows
    assert t.letters == letters[f"{gen_corpus.VICTIM}>{gen_corpus.CNC}:443/tcp"]
    assert t.letters.startswith("88,h,h,h,h")  # a periodic beacon: strongly periodic letters after two
    assert victim.names["cdn-edge.example.net"].answers == {gen_corpus.CNC}
    assert cnc.times_blocked == 1 and cnc.score >= 1.0
    block_alert = next(a for a in cnc.alerts if a["action"] == "block")
    start = (block_alert["ts"] // 3600) * 3600
    assert cnc.windows[start] == max(a["score"] for a in cnc.alerts if (a["ts"] // 3600) * 3600 == start)


def test_the_text_is_a_story_in_time_order(beacon_run: tuple[list[dict], dict[str, str]]) -> None:
    records, _ = beacon_run
    story = build(records, {gen_corpus.VICTIM})[gen_corpus.VICTIM]
    text = render(story)
    body = [ln for ln in text.split("\n\n")[1].splitlines()]
    stamps = [ln[:19] for ln in body]
    assert stamps == sorted(stamps) and len(body) >= 4
    kinds = [ln.split()[2] for ln in body]
    assert kinds.index("dns") < kinds.index("evidence")  # it asked for the name before it beaconed
    assert any("asked cdn-edge.example.net -> 203.0.113.66" in ln for ln in body)
    assert any(f"{gen_corpus.VICTIM} -> {gen_corpus.CNC}:443/tcp" in ln and "letters " in ln for ln in body)
    assert "score per window:" in text


def test_every_per_host_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline, "MAX_TUPLES", 10)
    monkeypatch.setattr(timeline, "MAX_NAMES", 5)
    recs = [{"k": "flow", "ts": 1000.0 + i, "end": 1000.5 + i, "proto": "tcp", "src": "10.0.0.9", "sport": 40000,
             "dst": f"10.1.{i // 250}.{i % 250}", "dport": 23, "sbytes": 60, "dbytes": 0} for i in range(300)]
    recs += [{"k": "dns", "ts": 1000.0 + i, "host": "10.0.0.9", "name": f"x{i}.example", "rcode": 3, "answers": []}
             for i in range(50)]
    s = build(recs, {"10.0.0.9"})["10.0.0.9"]
    assert len(s.tuples) == 10 and s.left_out["tuples"] == 290
    assert len(s.names) == 5 and s.left_out["names"] == 45
    text = render(s)
    assert "left out: 290 tuples, 45 names" in text
    # ten one-flow tuples to port 23 on ten hosts: one line, not ten
    assert "10.0.0.9 -> 10 hosts:23/tcp, one flow each, 600 B up, 0 B down" in text
    assert text.count(":23/tcp") == 1


def test_scans_are_one_line_each_and_other_tuples_stay() -> None:
    def rec(i: int, dst: str, dport: int, n: int = 1) -> list[dict]:
        return [{"k": "flow", "ts": 100.0 + i + j, "end": 100.5 + i + j, "proto": "tcp", "src": "10.0.0.9",
                 "sport": 40000 + j, "dst": dst, "dport": dport, "sbytes": 60, "dbytes": 40} for j in range(n)]
    recs = [r for i in range(8) for r in rec(i, "10.0.1.1", 1000 + i)]  # vertical: 8 ports of one host
    recs += [r for i in range(3) for r in rec(i, f"10.0.2.{i}", 22)]  # 3 one-flow tuples: too few to group
    recs += rec(0, "10.0.3.3", 443, n=4)  # a 4-tuple with 4 flows
    body = render(build(recs, {"10.0.0.9"})["10.0.0.9"]).split("\n\n")[1].splitlines()
    assert sum("10.0.0.9 -> 10.0.1.1: 8 ports/tcp, one flow each" in ln for ln in body) == 1
    assert sum(":22/tcp: 1 flow," in ln for ln in body) == 3
    assert sum("10.0.0.9 -> 10.0.3.3:443/tcp: 4 flows" in ln for ln in body) == 1
    assert len(body) == 5


def test_records_of_the_wrong_shape_are_left_out() -> None:
    recs: list[dict[str, Any]] = [
        {"k": "flow", "ts": 1.0, "src": "10.0.0.1"}, {"k": "dns", "ts": 2.0, "host": "10.0.0.1"},
        {"k": "alert", "ts": "x", "offender": "10.0.0.1"},
        {"k": "dns", "ts": 3.0, "host": "10.0.0.1", "name": "ok.example", "rcode": 0, "answers": ["1.2.3.4"]}]
    s = build(recs, {"10.0.0.1"})["10.0.0.1"]
    assert list(s.names) == ["ok.example"] and not s.tuples


@given(st.text())
def test_printable_leaves_no_control_character(text: str) -> None:
    out = printable(text)
    assert out.isprintable()
    if text.isprintable():
        assert out == text


def test_a_hostile_name_cannot_drive_the_terminal() -> None:
    recs = [{"k": "dns", "ts": 5.0, "host": "10.0.0.1", "name": "evil\x1b[2J\rexample", "rcode": 0, "answers": []}]
    text = render(build(recs, {"10.0.0.1"})["10.0.0.1"])
    assert "\x1b" not in text and "\r" not in text and "evil\\x1b[2J\\rexample" in text


def test_the_reader_skips_a_half_line_and_honours_since(tmp_path: Path) -> None:
    (tmp_path / "activity.jsonl").write_text(
        '{"k":"dns","ts":10,"host":"a","name":"n","rcode":0}\n[1]\n'
        '{"k":"flow","ts":5,"end":50,"src":"a"}\n{"k":"dns","ts":100,"ho')
    r = Reader.folder(tmp_path, since=20.0)
    got = list(r)
    assert [x["k"] for x in got] == ["flow"]  # the flow ends after `since`; the first dns is older
    assert r.skipped == 2


def test_the_gateway_log_is_rotated_and_read_oldest_first(tmp_path: Path) -> None:
    log = RotatingActivityLog(tmp_path, max_bytes=2000, keep=3)
    for i in range(400):
        log.write_line(json.dumps({"k": "dns", "ts": float(i), "host": "h", "name": f"n{i}", "rcode": 0}))
    log.close()
    files = log_files(tmp_path)
    assert [f.name for f in files] == ["activity.jsonl.3", "activity.jsonl.2", "activity.jsonl.1", "activity.jsonl"]
    assert sum(f.stat().st_size for f in files) <= 4 * 2000
    ts = [r["ts"] for r in Reader(files)]
    assert ts == sorted(ts) and ts[-1] == 399.0 and ts[0] > 0  # the oldest were let go


def test_a_write_that_fails_is_reported_once_and_never_raised(tmp_path: Path) -> None:
    err = io.StringIO()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = RotatingActivityLog(blocker, errors=err)
    for _ in range(3):
        log.write_line("{}")
    assert err.getvalue().count("cannot write") == 1


def test_select_skips_lines_unparsed_but_never_loses_a_record(beacon_run: tuple[list[dict], dict[str, str]],
                                                              tmp_path: Path) -> None:
    records, _ = beacon_run
    (tmp_path / "activity.jsonl").write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    reader = Reader.folder(tmp_path)
    assert list(reader) == records
    assert list(reader.select(kinds=("alert", "block"))) == [r for r in records if r["k"] in ("alert", "block")]
    # a prefilter on the text: every record that names the host is still there
    mine = list(reader.select(mentions=[gen_corpus.CNC]))
    assert len(mine) < len(records)
    assert build(mine, {gen_corpus.CNC}) == build(records, {gen_corpus.CNC})


HOST = "10.0.0.1"
_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(st.characters(blacklist_categories=()), max_size=20),  # lone surrogates too
                    st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                    st.sampled_from([HOST, "10.0.0.2", "1e300", "nan"]))
_fields = ("ts", "end", "src", "dst", "dport", "proto", "sbytes", "dbytes", "host", "name", "rcode", "answers",
           "offender", "src_ip", "score", "action", "detector", "description", "ip", "duration", "reason", "by", "who")


@st.composite
def hostile_records(draw: st.DrawFn) -> dict[str, object]:
    """An activity record of a known kind naming the host, every other field anything JSON holds."""
    rec: dict[str, object] = {"k": draw(st.sampled_from(["flow", "dns", "alert", "block", "unblock"]))}
    for f in _fields:
        if draw(st.booleans()):
            rec[f] = draw(_values)
    for f in draw(st.lists(st.sampled_from(["src", "host", "offender", "ip"]), max_size=2)):
        rec[f] = HOST
    return rec


@settings(max_examples=100, deadline=None)  # (a page each: about 0.1 s per example)
@given(st.lists(hostile_records(), max_size=6))
def test_a_hostile_activity_log_never_breaks_a_timeline_or_the_report(tmp_path_factory: pytest.TempPathFactory,
                                                                      recs: list[dict[str, object]]) -> None:
    """Whatever a line of activity.jsonl holds (a hand-edited or damaged log: a time of 1e300 or
    Infinity, a count that is text, a block with a list for its duration), the reader and the
    stories leave it out or tell it, and the text and the page are written: `slipsq report` never
    ends in an internal error for a line of its input."""
    from slipsq.report import stories
    from slipsq.report.html import render_report

    d = tmp_path_factory.mktemp("hostile")
    good = {"k": "alert", "ts": 5.0, "offender": HOST, "src_ip": HOST, "score": 1.5, "description": "ok"}
    (d / "activity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [good, *recs]))
    reader = Reader.folder(d)
    found = stories(reader)
    assert HOST in [s.ip for s in found]
    for s in found:
        text = render(s, reader.skipped)
        assert all(line.isprintable() for line in text.splitlines())
    page = render_report(found, "test", skipped=reader.skipped)
    assert page.startswith("<!DOCTYPE html>")
    page.encode("utf-8")  # what write_report does: a lone surrogate would fail it (internal error)
    assert "\x1b" not in page


_lines = st.one_of(
    st.sampled_from(['{"k":"alert","ts":5.0,"offender":"10.0.0.1","score":1.5}',
                     '{"k":"alert","ts":"x","offender":"10.0.0.1"}',
                     '{"k":"flow","ts":6,"end":50,"src":"10.0.0.1","dst":"10.0.0.2"}',
                     '{"k":"flow","ts":Infinity,"src":"10.0.0.2"}',
                     '{"k":"dns","ts":1e300,"host":"10.0.0.2"}', '{"k":"dns","ts":7,"host":"10.0.0.2","name":"n"}',
                     '{"k": "block", "ts": 8, "ip": "10.0.0.1"}', '{"k":"block","ts":100000000000,"ip":"10.0.0.1"}',
                     "[1]", "", "   ", "not json", '{"k":"dns","ts":9,"ho', '"10.0.0.1"']),
    st.text(max_size=30))


@settings(max_examples=200, deadline=None)
@given(st.lists(_lines, max_size=12), st.sampled_from([None, ("alert", "block"), ("flow",)]),
       st.sampled_from([None, [], ["10.0.0.1"], ["10.0.0.2"]]), st.sampled_from([float("-inf"), 6.5]))
def test_the_reader_yields_the_records_and_counts_every_unreadable_line(
        tmp_path_factory: pytest.TempPathFactory, lines: list[str], kinds: tuple[str, ...] | None,
        mentions: list[str] | None, since: float) -> None:
    """A pass, prefiltered or not, yields the log's records in order (every one its filters ask for,
    judged by the record's fields, and perhaps others its text prefilters let through: the caller
    checks), and after it the reader counts every line that is no JSON object with a time, also
    the lines the pass skipped unparsed (a report's pass that finds no host with evidence must not
    read a log whose every time is damaged as a quiet network)."""
    from slipsq.output.activity import _record, is_time

    d = tmp_path_factory.mktemp("log")
    text = "".join(line.replace("\n", " ").replace("\r", " ") + "\n" for line in lines)
    (d / "activity.jsonl").write_text(text, encoding="utf-8", errors="surrogatepass")
    got = Reader.folder(d, since)
    records = list(got.select(kinds, mentions))
    with (d / "activity.jsonl").open(encoding="utf-8", errors="replace") as fh:
        all_lines = list(fh)  # as a reader splits them (splitlines would also split at \x0c)
    parsed = [(line, _record(line)) for line in all_lines]
    in_time = [(line, r) for line, r in parsed if r is not None and (
        r["ts"] >= since or (r.get("k") == "flow" and is_time(r.get("end")) and r["end"] >= since))]
    wanted = [r for line, r in in_time if (kinds is None or r.get("k") in kinds)
              and (mentions is None or any(m in line for m in mentions))]
    rest = iter([r for _, r in in_time])
    assert all(any(r == x for x in rest) for r in records)  # in the log's order, nothing invented
    left = iter(records)
    assert all(any(w == x for x in left) for w in wanted)  # nothing asked for left out
    bad = sum(1 for line, r in parsed if line.strip() and r is None)
    assert got.skipped == bad
    assert got.unreadable == ({str(d / "activity.jsonl"): (bad, sum(1 for x in all_lines if x.strip()))} if bad else {})


def test_a_line_in_the_written_shape_is_counted_once_a_pass_parses_it(tmp_path: Path) -> None:

    (tmp_path / "activity.jsonl").write_text('{"k":"flow","ts":5,"src":"10.0.0.1",oops}\n{"k":"dns","ts":"x"}\n'
                                             '{"k":"alert","ts":5,"offender":"10.0.0.1"}\n')
    log = Reader.folder(tmp_path)
    assert len(list(log.select(kinds=("alert",)))) == 1 and log.skipped == 1  # the flow line: taken as whole, unparsed
    assert len(list(log.select(mentions=["10.0.0.1"]))) == 1 and log.skipped == 2
    assert len(list(log.select(kinds=("alert",)))) == 1 and log.skipped == 2  # counted once, whichever pass
    assert log.damage() == [f"{tmp_path / 'activity.jsonl'}: damaged activity log: 2 of 3 lines unreadable (not a "
                            "JSON object with a time), skipped; the rest was read"]
