"""Admin commands of inline mode: block, unblock, blocks, status, rules show/remove, ti update, explain.

Each talks to the running daemon over its control socket, and acts on the block store and the kernel
directly when no daemon runs (so `slipsq unblock` always works). Messages and exit codes only; the
logic lives in control.py, daemon.py and verdict/.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from slipsq.cli_types import GivenPath
from slipsq.errors import InputError, RefusedError, SlipsqError, SystemSetupError

if TYPE_CHECKING:  # for the annotations only: the commands import these where they use them
    from slipsq.allow import AllowList
    from slipsq.control import Admin
    from slipsq.verdict.firewall import Firewall


def _state_dir(ctx: click.Context, local: str | None) -> str | None:
    if local:
        return local
    obj = ctx.find_root().obj or {}
    return obj.get("state_dir") or None  # then resolve_state_dir: $SLIPSQ_STATE_DIR, the default


def _guard(ctx: click.Context, fn: Callable[[], Any]) -> None:
    from slipsq.cli import run_guarded

    obj = ctx.find_root().obj or {}
    code = run_guarded(partial(_reading_answers, fn), bool(obj.get("debug")))
    if code:
        ctx.exit(int(code))


_ANSWERED: list[str] = []  # the requests the daemon answered yes to, in this command


def _reading_answers(fn: Callable[[], Any]) -> Any:
    """fn(); a KeyError or TypeError once the daemon has answered is its answer's shape (a daemon of
    another version), said as such, not an "internal error". Before any answer, it is a bug."""
    _ANSWERED.clear()
    try:
        return fn()
    except (KeyError, TypeError, AttributeError) as e:
        if not _ANSWERED:
            raise
        raise SystemSetupError(f"the slipsq daemon's answer to '{_ANSWERED[-1]}' is not one this slipsq reads "
                               f"({type(e).__name__}: {e}; another version of slipsq? restart it: systemctl "
                               "restart slipsq)") from None


def _daemon(state_dir: str | None, req: dict[str, Any], wait: float = 10.0) -> dict[str, Any] | None:
    """The daemon's answer to `req` (None: no daemon runs). An answer without the fields this slipsq
    reads is one clear error (_reading_answers)."""
    from slipsq.control import request
    from slipsq.verdict.store import resolve_state_dir

    reply = request(resolve_state_dir(state_dir), req, wait)
    if reply is not None and not reply.get("ok"):
        raise _ReplyError(str(reply.get("error", "the daemon refused")))
    if reply is not None:
        _ANSWERED.append(str(req["cmd"]))
    return reply


class _ReplyError(SlipsqError):  # the daemon refused: exit 1, as the offline Admin's RefusedError
    code = 1


class _NotBlocked(SlipsqError):
    code = 1


def _offline_admin(ctx: click.Context, state_dir: str | None, config_path: str | None) -> Admin:
    """Admin on the store and the kernel, for when no daemon runs."""
    from slipsq import runmode
    from slipsq.control import Admin
    from slipsq.daemon import default_duration
    from slipsq.verdict.store import BlockStore

    if os.geteuid() != 0:
        raise SystemSetupError("the slipsq daemon is not running, and acting on the firewall directly "
                               "needs root")
    obj = ctx.find_root().obj or {}
    cfg = runmode.load_config(config_path or obj.get("config_path"))
    allow = runmode.make_allow(cfg)
    if cfg["allow.infrastructure"]:  # what the daemon protects, read once (it follows changes itself)
        from slipsq.protect import OWN, gather

        allow.set_protected({a: r for a, r in gather().items() if r != OWN or cfg["allow.own_addresses"]})
    fw = _firewall(allow)  # before the store: a firewall we cannot drive leaves no state dir behind
    return Admin(BlockStore(state_dir), fw, allow, default_duration(cfg), cfg["judge.pardon"])


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _left(seconds: float | None) -> str:
    if seconds is None:
        return "no expiry"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


STATE_DIR = click.option("--state-dir", type=GivenPath(file_okay=False), default=None,
                         help="State directory [default: /var/lib/slipsq; env SLIPSQ_STATE_DIR].")
WAIT = click.option("--wait", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
                    help="How long to wait for the daemon's answer; past it, act on the store and the kernel "
                         "directly (the daemon takes the change up when it runs again).")
STUCK = ("directly: the daemon did not answer within {wait:g}s; it takes the change up when it runs again")
CONFIG = click.option("--config", "config_path", type=GivenPath(dir_okay=False), default=None,
                      help="TOML configuration (allow list, default block duration, judge.pardon) when no "
                           "daemon runs.")


@click.command()
@click.argument("ip")
@click.option("--for", "duration", default=None, metavar="DURATION",
              help="How long: 90s, 15m, 4h, 1h30m, 2d, or 'forever' (0 is refused) [default: judge.block_duration].")
@click.option("--reason", default="manual", show_default=True, help="Why (kept in the audit trail).")
@STATE_DIR
@CONFIG
@WAIT
@click.pass_context
def block(ctx: click.Context, ip: str, duration: str | None, reason: str, state_dir: str | None,
          config_path: str | None, wait: float) -> None:
    """Block IP in the kernel now (refused for this gateway's own, loopback and allow-listed addresses)."""

    def work() -> None:
        from slipsq.control import DaemonTimeout, canonical_ip, parse_duration, who_am_i
        from slipsq.records import printable

        why = printable(reason)  # one line in the audit and the logs, whatever bytes it held
        addr = canonical_ip(ip)
        seconds = parse_duration(duration) if duration else "default"
        sd = _state_dir(ctx, state_dir)
        req = {"cmd": "block", "ip": addr, "duration": duration or "default", "reason": why}
        note = ""
        try:
            reply = _daemon(sd, req, wait)
        except DaemonTimeout:
            reply, note = None, f"; {STUCK.format(wait=wait)}"
        if reply is not None:
            b = reply["block"]
        else:
            b = _offline_admin(ctx, sd, config_path).block(addr, seconds, why, who_am_i()).to_dict()
        if b["expires"] is None:  # asked for by name ('forever'): say so, since blocks expire by default
            click.echo(f"blocked {addr} with no expiry, until 'slipsq unblock {addr}' ({why}){note}")
        else:
            click.echo(f"blocked {addr} until {_when(b['expires'])} ({why}){note}")

    _guard(ctx, work)


@click.command()
@click.argument("ip")
@click.option("--reason", default="unblocked by admin", show_default=True,
              help="Why (kept in the audit trail).")
@click.option("--pardon", metavar="DURATION",
              help="How long new evidence cannot block IP again: 12h, 7d, 0 (it may at once) or forever. "
                   "[default: judge.pardon, 1d]")
@STATE_DIR
@CONFIG
@WAIT
@click.pass_context
def unblock(ctx: click.Context, ip: str, reason: str, pardon: str | None, state_dir: str | None,
            config_path: str | None, wait: float) -> None:
    """Remove IP's block at once (kernel and store); the daemon also forgets the evidence against it,
    and for a day (judge.pardon, or --pardon) new evidence is reported but does not block IP again:
    an unblock says the block was wrong."""

    def work() -> None:
        from slipsq.control import DaemonTimeout, canonical_ip, pardon_text, parse_pardon, who_am_i
        from slipsq.records import printable

        why = printable(reason)
        addr = canonical_ip(ip)
        seconds = None if pardon is None else parse_pardon(pardon)
        sd = _state_dir(ctx, state_dir)
        note = ""
        req: dict[str, Any] = {"cmd": "unblock", "ip": addr, "reason": why}
        if seconds is not None:
            req["pardon"] = "forever" if seconds == float("inf") else seconds
        try:
            reply = _daemon(sd, req, wait)
        except DaemonTimeout:
            reply, note = None, f" ({STUCK.format(wait=wait)})"
        if reply is None:
            admin = _offline_admin(ctx, sd, config_path)
            admin.unblock(addr, who_am_i(), why, seconds)
            used: Any = admin.default_pardon if seconds is None else seconds
        else:
            used = reply.get("pardon")  # what the daemon applied (None: a daemon older than pardons)
        click.echo(f"unblocked {addr}{note}; pardon: {pardon_text(used, seconds is None)}")

    _guard(ctx, work)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array of blocks.")
@click.option("--remove-damaged", is_flag=True,
              help="Remove the rows of the block store that are damaged (no reader uses them; each is named "
                   "and written to the audit log) and say which.")
@STATE_DIR
@click.pass_context
def blocks(ctx: click.Context, as_json: bool, remove_damaged: bool, state_dir: str | None) -> None:
    """Current blocks: ip, reason, detector, since, expires; then the addresses an admin unblocked and
    pardoned (text only; --json lists the blocks). A damaged row of the block store (a hand edit, a
    damaged disk) is named and skipped, and the exit status is 2."""

    def work() -> None:
        import time

        from slipsq.allow import AllowList
        from slipsq.control import Admin, who_am_i
        from slipsq.verdict.store import DB_NAME, BlockStore, resolve_state_dir

        sd = _state_dir(ctx, state_dir)
        if remove_damaged:  # on the file itself, daemon or not: no reader uses these rows
            if not (resolve_state_dir(sd) / DB_NAME).exists():
                click.echo("no block store: nothing to remove")
                return
            gone = BlockStore(sd, create=False).remove_damaged(time.time(), who_am_i())
            for why in gone:
                click.echo(f"removed a damaged row: {why}")
            click.echo(f"{len(gone)} damaged row{'' if len(gone) == 1 else 's'} removed")
            return
        reply = _daemon(sd, {"cmd": "blocks"})
        damaged: dict[str, str] = {}
        pardons: list[dict[str, Any]] = []
        if reply is not None:
            rows, pardons, damaged = reply["blocks"], reply.get("pardons") or [], reply.get("damaged") or {}
        elif not (resolve_state_dir(sd) / DB_NAME).exists():
            rows = []  # slipsq never ran with this state dir: nothing was ever blocked
        else:
            store = BlockStore(sd, create=False)
            admin = Admin(store, None, AllowList(), None)
            rows, pardons, damaged = admin.blocks(), admin.pardons(), store.damage()
        for why in damaged.values():  # rows slipsq did not write: named, never a crash
            click.echo(f"slipsq: the block store has a damaged row, skipped: {why}", err=True)
        if as_json:
            click.echo(json.dumps(rows, default=str))
        else:
            _print_blocks(rows, pardons)
        if damaged:  # what was whole is listed; the store is not sound: exit 2, as a damaged replay input
            raise InputError(f"the block store has {len(damaged)} damaged row{'s' if len(damaged) > 1 else ''} "
                             "(named above, not listed); `slipsq blocks --remove-damaged` removes them")

    _guard(ctx, work)


def _print_blocks(rows: list[dict[str, Any]], pardons: list[dict[str, Any]]) -> None:
    """`slipsq blocks` as text: the blocks, then the pardons."""
    if not rows:
        click.echo("no blocks")
    for b in rows:
        click.echo(f"{b['ip']:<39} {_left(b['remaining']):>10}  since {_when(b['since'])}  "
                   f"{b['detector'] or '-'} by {b['by']}: {b['reason']}")
    if pardons:  # an admin's unblocks: their evidence alerts, cannot block them again for a while
        click.echo(f"pardoned (unblocked by an admin; `slipsq block IP` ends one): {len(pardons)}")
    for p in pardons:
        click.echo(f"{p['ip']:<39} {_left(p['remaining']):>10}  of {', '.join(p['detectors']) or 'all'} evidence")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@STATE_DIR
@click.pass_context
def status(ctx: click.Context, as_json: bool, state_dir: str | None) -> None:
    """The running daemon: uptime, packets, verdicts, flows, alerts, blocks, kernel queue drops."""

    def work() -> int:
        from slipsq.output.inline import status_lines
        from slipsq.records import printable
        from slipsq.verdict.store import resolve_state_dir

        sd = _state_dir(ctx, state_dir)
        reply = _daemon(sd, {"cmd": "status"})
        if reply is None:
            where = resolve_state_dir(sd)
            if as_json:
                click.echo(json.dumps({"running": False, "state_dir": str(where)}))
            else:
                click.echo(f"slipsq is not running (no control socket in {where}); with --install-rules "
                           "the diversion fails open: traffic flows uninspected")
            return 3  # as `systemctl status` for a stopped unit
        st = {"running": True, **reply["status"]}
        if as_json:
            click.echo(json.dumps(st, default=str))
            return 0
        k = st["kernel"] or {}
        t = st["table"]
        rate = st.get("per_second") or {}
        mem = st.get("memory") or {}
        click.echo(f"slipsq running, pid {st['pid']}, up {_left(st['uptime'])}, NFQUEUE {st['queue']} "
                   f"({st['backend']} iptables, diversion: {st['diversion']}"
                   + ("; DNS to and from the gateway too" if st.get("dns_diversion") else "") + ")"
                   + (", under systemd" if st.get("systemd") else "")
                   + (f", watchdog {st['watchdog']:g}s" if st.get("watchdog") else ""))
        click.echo(f"packets {st['packets']}  accepted {st['accepted']}  dropped {st['dropped']}  "
                   f"errors {st['errors']}  ({rate.get('packets', 0):g} packets/s, "
                   f"{rate.get('verdicts', 0):g} verdicts/s)")
        for w in st.get("workers") or []:  # --queue A:B: the sums above, worker by worker
            click.echo(f"  queue {w['queue']}: " + (f"worker pid {w['pid']}" if w["alive"] else
                                                     "worker DOWN (this queue fails open until it is back)")
                       + f", packets {w['packets']}, dropped {w['dropped']}, {w['flows_open']} open flows, "
                         f"restarts {w['restarts']}")
        click.echo(f"flows {st['flows']} closed, {t.get('flows_open', 0)} open  alerts {st['alerts']}  "
                   f"blocks {st['blocks_active']} active ({st['blocks_decided']} decided since start)")
        if st.get("bypass"):
            b = st["bypass"]
            # (forced and late by .get: a daemon still running the version before them has neither)
            click.echo(f"bypass: {b['bypassed']} flows bypassed ({b.get('forced', 0)} before the queue drained; "
                       f"{b.get('late', 0)} packets queued after a switch, which forwarded ones may have "
                       f"overtaken), counts merged from conntrack for {b['merged']} ({b['unmerged']} kept "
                       f"slipsq's own, {b['waiting']} waiting)")
        if mem:
            click.echo(f"memory {mem.get('rss_kb', 0) / 1024:.1f} MB resident "
                       f"(flow table {mem.get('table_bytes', 0) / 2**20:.1f} MB)")
        click.echo(f"kernel queue: waiting {k.get('waiting', '?')} / {k.get('maxlen', '?')}, "
                   f"queue_dropped {k.get('queue_dropped', '?')}, user_dropped {k.get('user_dropped', '?')}; "
                   f"kernel block rules dropped {st['kernel_block_drops']['packets']} packets")
        click.echo(f"fail-open {'on' if st['fail_open'] else 'off'}: {st['note']}")
        if st.get("dns_untrusted_answers"):  # (.get: a daemon of the version before has none)
            click.echo(f"DNS: {st['dns_untrusted_answers']} answers from resolvers slipsq does not trust taught no "
                       "names (devices asking your ISP's resolvers directly? add them to dns.trusted_resolvers)")
        nets = st.get("local_networks") or {}
        click.echo("local: the private ranges" + "".join(
            f"; {what} {', '.join(nets[key])}" for key, what in (("config", "network.local"), ("lan", "the LAN's"))
            if nets.get(key)))
        for line in status_lines(st):  # hooks and the syslog sender, when set up
            click.echo(line)
        for a in st.get("last_alerts") or []:  # a description quotes DNS names of any bytes: escaped
            click.echo(printable(f"  {a['time']} [{a['action']}] {a['detector']} {a['offender']}: "
                                 f"{a['description']}"))
        return 0

    _guard(ctx, work)


@click.group()
def rules() -> None:
    """The firewall rules and sets slipsq creates (all tagged 'slipsq')."""


@rules.command("show")
@STATE_DIR
@click.pass_context
def rules_show(ctx: click.Context, state_dir: str | None) -> None:
    """List slipsq's rules (with counters), its sets' members and the kernel queue counters."""

    def work() -> None:
        from slipsq.verdict.firewall import queue_counters

        fw = _firewall()
        click.echo(f"iptables backend {fw.backend.name}, table {fw.backend.table} (iptables -t {fw.backend.table} -S)")
        for fam, r in fw.rules():
            click.echo(f"ipv{fam} {r.chain:<8} #{r.position:<3} {r.packets:>10} pk  {r.text}")
        members = fw.members()
        click.echo(f"{len(members)} blocked addresses in the kernel sets")
        for ip, left in sorted(members.items()):
            click.echo(f"  {ip:<39} {'no timeout' if left == 0 else _left(left)}")
        for q in queue_counters().values():
            click.echo(f"NFQUEUE {q.queue}: waiting {q.waiting}, queue_dropped {q.queue_dropped}, "
                       f"user_dropped {q.user_dropped}, bound by portid {q.portid}")

    _guard(ctx, work)


@rules.command("remove")
@STATE_DIR
@click.pass_context
def rules_remove(ctx: click.Context, state_dir: str | None) -> None:
    """Remove everything slipsq put in the firewall (its tagged rules, chain SLIPSQ, its sets).
    Refused while a daemon runs: it would put them back within 10 s (stop it first)."""

    def work() -> None:
        if _daemon(_state_dir(ctx, state_dir), {"cmd": "status", "light": True}) is not None:
            raise RefusedError("slipsq is running and would put its rules back within 10 s: stop it first "
                               "(systemctl stop slipsq; it removes its diversion itself and leaves the blocks)")
        done = _firewall().remove_all()
        click.echo(done.message())
        if done.left:
            raise SystemSetupError("some of slipsq's firewall state could not be removed (see above; "
                                   "a running daemon puts it back: stop it first)")
        if done.rules or done.chains or done.sets:
            click.echo("blocks stay in the store (slipsq blocks) and return when the daemon starts")

    _guard(ctx, work)


def _firewall(allow: AllowList | None = None) -> Firewall:
    from slipsq.verdict.firewall import host_firewall

    if os.geteuid() != 0:
        raise SystemSetupError("reading or changing the firewall needs root")
    return host_firewall(allow)


@click.group()
def ti() -> None:
    """Threat-intelligence lists: local files of bad IPs and networks (config threatintel.folder)."""


@ti.command("update")
@click.option("--config", "config_path", type=GivenPath(dir_okay=False), default=None,
              help="TOML configuration naming threatintel.folder.")
@STATE_DIR
@click.pass_context
def ti_update(ctx: click.Context, config_path: str | None, state_dir: str | None) -> None:
    """Check the lists (counts, bad lines) and make a running daemon reload them."""

    def work() -> None:
        from slipsq.control import request
        from slipsq.detect.threatintel import load_lists
        from slipsq.errors import ConfigError
        from slipsq.runmode import load_config as load
        from slipsq.verdict.store import resolve_state_dir

        cfg = load(config_path or (ctx.find_root().obj or {}).get("config_path"))
        folder = cfg["threatintel.folder"]
        if not folder:
            raise ConfigError("threatintel.folder is not set: give --config FILE with "
                              "[threatintel] folder = \"/path/to/lists\"")
        _, stats = load_lists(folder)
        click.echo(f"{folder}: {stats.summary()}")
        try:
            reply = request(resolve_state_dir(_state_dir(ctx, state_dir)), {"cmd": "reload"})
        except SlipsqError as e:
            click.echo(f"could not reach the daemon ({e}): it reads the lists when it starts")
            return
        if reply is not None and not reply.get("ok"):
            raise _ReplyError(f"the running daemon did not reload: {reply.get('error', 'it refused')}; it goes "
                              "on with the configuration and lists it had")
        if reply is not None:
            click.echo("the running daemon reloaded its configuration and lists")
        else:
            click.echo("no daemon is running: the lists are read when slipsq starts (and by every replay)")

    _guard(ctx, work)


@click.command()
@click.argument("ip")
@click.option("--from", "out_dir", type=GivenPath(), default=None, metavar="DIR",
              help="A replay output folder (`slipsq replay -o DIR`) instead of the block store.")
@click.option("--json", "as_json", is_flag=True, help="The deciding alert as JSON, with its window.")
@STATE_DIR
@click.pass_context
def explain(ctx: click.Context, ip: str, out_dir: str | None, as_json: bool, state_dir: str | None) -> None:
    """Why IP was blocked: the evidence of the window that decided (detector, score, description).
    Reads the block store (daemon up or down) or a replay's alerts.jsonl; exit 1 when not blocked."""

    def work() -> None:
        from slipsq import explain as ex

        addr = ex.normalize_ip(ip)
        alert = ex.from_replay(out_dir, addr) if out_dir else ex.from_store(_state_dir(ctx, state_dir), addr)
        if alert is None:
            raise _NotBlocked(f"{addr} was not blocked ({f'in {out_dir}' if out_dir else 'in the block store'})")
        if as_json:
            click.echo(json.dumps(alert))
        else:
            click.echo(ex.render(addr, alert))

    _guard(ctx, work)


def register(group: click.Group) -> None:
    """Add the admin commands to the `slipsq` group (called by slipsq.cli)."""
    for cmd in (block, unblock, blocks, status, rules, ti, explain):
        group.add_command(cmd)
