"""`slipsq timeline IP` and `slipsq report`: what happened on the network, from a replay output
folder (`--from DIR`) or from this gateway's state directory (the daemon may be running or not).

Arguments, messages and exit codes only; the work is in slipsq.report and slipsq.output.timeline.
They never talk to the daemon, the kernel or the network: they read files slipsq wrote.

Damaged input as `slipsq replay` tells it: what could be read is shown (the timeline, the page, which
also says what was lost), then one `slipsq: FILE: ...` line per activity file that held unreadable
lines, and the exit status is 2.
"""

from __future__ import annotations

import time
from typing import Any

import click

from slipsq.cli_types import GivenPath
from slipsq.errors import InputError, SlipsqError


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


def _damage(records: Any) -> int:
    """One line per damaged activity file, after the results; the exit status (2: damaged, else 0)."""
    notes = records.damage()
    for note in notes:
        click.echo(f"slipsq: {note}", err=True)
    return InputError.code if notes else 0


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
@click.option("--from", "from_dir", type=GivenPath(file_okay=False), default=None, help=FROM_HELP)
@click.option("--since", default=None, metavar="DURATION", help=SINCE_HELP)
@click.option("--state-dir", type=GivenPath(file_okay=False), default=None, help=STATE_HELP)
@click.pass_context
def timeline(ctx: click.Context, ip: str, from_dir: str | None, since: str | None, state_dir: str | None) -> None:
    """The story of one host, in time order: its flows per 4-tuple with their behavioral letters,
    the DNS names it asked, the evidence as it came, its score per window, its blocks. Exit status 2
    when the activity log held unreadable lines (one line per file names them, after the timeline)."""

    def work() -> int:
        from slipsq.explain import normalize_ip
        from slipsq.output.timeline import render
        from slipsq.report import stories

        addr = normalize_ip(ip)
        records, name = _source(ctx, from_dir, since, state_dir)
        window, threshold = _judge(ctx)
        story = stories(records, [addr], window, threshold)[0]
        if not (story.tuples or story.names or story.alerts or story.blocks):
            if not records.damage():
                raise SlipsqError(f"nothing about {addr} in {name}")
            click.echo(f"slipsq: nothing about {addr} in what could be read of {name}", err=True)
        else:
            click.echo(render(story, records.skipped), nl=False)
        return _damage(records)

    _guard(ctx, work)


@click.command()
@click.option("-o", "--out", "out_file", type=GivenPath(allow_dash=True), default="slipsq-report.html",
              show_default=True, metavar="FILE",
              help="The HTML file to write (one self-contained file), new or replaced whole (a symlink's target "
                   "is written); - for standard output. Anything else (a device, a pipe, a folder) is refused.")
@click.option("--from", "from_dir", type=GivenPath(file_okay=False), default=None, help=FROM_HELP)
@click.option("--since", default=None, metavar="DURATION", help=SINCE_HELP)
@click.option("--state-dir", type=GivenPath(file_okay=False), default=None, help=STATE_HELP)
@click.pass_context
def report(ctx: click.Context, out_file: str, from_dir: str | None, since: str | None, state_dir: str | None) -> None:
    """One self-contained HTML page (no script, no network needed to open it): the hosts with
    evidence ranked by score, each with its timeline, blocks, 4-tuple letters and plots. Exit status 2
    when the activity log held unreadable lines (the page says so, and one line per file after it)."""

    def work() -> int:
        from slipsq.report import STDOUT, output_target, stories, write_report

        if out_file != STDOUT:
            output_target(out_file)  # a device or a folder is refused before the log is read
        records, name = _source(ctx, from_dir, since, state_dir)
        window, threshold = _judge(ctx)
        found = stories(records, None, window, threshold)
        size = write_report(out_file, found, name, records.skipped, records.unreadable)
        # with -o -, standard output is the page: this line goes to stderr
        click.echo(f"{'<stdout>' if out_file == STDOUT else out_file}: {len(found)} host(s) with evidence, "
                   f"{size / 1000:.0f} kB", err=out_file == STDOUT)
        return _damage(records)

    _guard(ctx, work)


def register(group: click.Group) -> None:
    """Add `timeline` and `report` to the `slipsq` group (called by slipsq.cli)."""
    for cmd in (timeline, report):
        group.add_command(cmd)
