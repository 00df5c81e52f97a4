"""`slipsq timeline IP` and `slipsq report`: what happened on the network, from a replay output
folder (`--from DIR`) or from this gateway's state directory (the daemon may be running or not).

Arguments, messages and exit codes only; the work is in slipsq.report and slipsq.output.timeline.
They never talk to the daemon, the kernel or the network: they read files slipsq wrote.
"""

from __future__ import annotations

import time
from typing import Any

import click

from slipsq.errors import SlipsqError


def _source(ctx: click.Context, from_dir: str | None, since: str | None, state_dir: str | None) -> tuple[Any, str]:
    """The records to read and their name in messages: a replay folder (all of it, unless --since),
    else the gateway's state directory (the last --since, 24 h by default)."""
    from slipsq.durations import parse_duration
    from slipsq.errors import UsageError
    from slipsq.output.activity import Reader
    from slipsq.report import GatewayRecords

    try:
        span = parse_duration(since) if since else None
    except ValueError as e:
        raise UsageError(f"--since: {e}") from None
    if from_dir:
        reader = Reader.folder(from_dir)
        if span:  # a replayed capture's "last hour" ends with its traffic, not now
            reader.since = (reader.last_ts() or time.time()) - span
        return reader, from_dir
    obj = ctx.find_root().obj or {}
    records = GatewayRecords(state_dir or obj.get("state_dir") or None, time.time() - (span or 86400.0))
    return records, f"gateway state {records.folder}"


def _judge(ctx: click.Context) -> tuple[float, float]:
    from slipsq.runmode import load_config

    obj = ctx.find_root().obj or {}
    cfg = load_config(obj.get("config_path"))
    return float(cfg["judge.window"]), float(cfg["judge.threshold"])


def _guard(ctx: click.Context, fn: Any) -> None:
    from slipsq.cli import run_guarded

    obj = ctx.find_root().obj or {}
    code = run_guarded(fn, bool(obj.get("debug")))
    if code:
        ctx.exit(int(code))


FROM_HELP = "A `slipsq replay -o DIR` folder [default: this gateway's state directory]."
STATE_HELP = "The gateway's state directory [default: /var/lib/slipsq; env SLIPSQ_STATE_DIR]."
SINCE_HELP = ("Only what happened in the last DURATION (24h, 90m, 2d) of the traffic [default: all of a replay "
              "folder; 24h on a gateway].")


@click.command()
@click.argument("ip")
@click.option("--from", "from_dir", type=click.Path(file_okay=False), default=None, help=FROM_HELP)
@click.option("--since", default=None, metavar="DURATION", help=SINCE_HELP)
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help=STATE_HELP)
@click.pass_context
def timeline(ctx: click.Context, ip: str, from_dir: str | None, since: str | None, state_dir: str | None) -> None:
    """The story of one host, in time order: its flows per 4-tuple with their behavioral letters,
    the DNS names it asked, the evidence as it came, its score per window, its blocks."""

    def work() -> None:
        from slipsq.explain import normalize_ip
        from slipsq.output.timeline import render
        from slipsq.report import stories

        addr = normalize_ip(ip)
        records, name = _source(ctx, from_dir, since, state_dir)
        window, threshold = _judge(ctx)
        story = stories(records, [addr], window, threshold)[0]
        if not (story.tuples or story.names or story.alerts or story.blocks):
            raise SlipsqError(f"nothing about {addr} in {name}")
        click.echo(render(story, records.skipped), nl=False)

    _guard(ctx, work)


@click.command()
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False), default="slipsq-report.html",
              show_default=True, help="The HTML file to write (one self-contained file).")
@click.option("--from", "from_dir", type=click.Path(file_okay=False), default=None, help=FROM_HELP)
@click.option("--since", default=None, metavar="DURATION", help=SINCE_HELP)
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help=STATE_HELP)
@click.pass_context
def report(ctx: click.Context, out_file: str, from_dir: str | None, since: str | None, state_dir: str | None) -> None:
    """One self-contained HTML page (no script, no network needed to open it): the hosts with
    evidence ranked by score, each with its timeline, blocks, 4-tuple letters and plots."""

    def work() -> None:
        from slipsq.report import stories, write_report

        records, name = _source(ctx, from_dir, since, state_dir)
        window, threshold = _judge(ctx)
        found = stories(records, None, window, threshold)
        size = write_report(out_file, found, name, records.skipped)
        click.echo(f"{out_file}: {len(found)} host(s) with evidence, {size / 1000:.0f} kB")

    _guard(ctx, work)


def register(group: click.Group) -> None:
    """Add `timeline` and `report` to the `slipsq` group (called by slipsq.cli)."""
    for cmd in (timeline, report):
        group.add_command(cmd)
