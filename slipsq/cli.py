"""The command line: arguments, config file, messages and exit codes. No detection logic lives here.

Every slipsq error becomes one line `slipsq: <message>` and a non-zero exit (see errors.py);
a traceback only with --debug.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import click

from slipsq import __version__
from slipsq.cli_types import GivenPath
from slipsq.errors import EXIT_CODES, InputError, SlipsqError, UsageError

EXIT_INTERNAL = 70
EXIT_HELP = "\b\nExit status:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"slipsq: {message}", err=True)
    sys.exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a replay (`timeout`, a service manager): it stops as a Ctrl-C does, what was
    analysed kept (slipsq.replay), with its own message and status (128 + 15)."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _stopped(e: KeyboardInterrupt) -> NoReturn:
    """One line and the status of a stop by signal: SIGTERM (Terminated) or Ctrl-C."""
    if isinstance(e, Terminated):
        _fail("terminated", 143)
    _fail("interrupted", 130)


def run_guarded(fn: Callable[[], Any], debug: bool) -> Any:
    """Run `fn`, turning slipsq errors and surprises into one line and an exit code."""
    try:
        return fn()
    except SlipsqError as e:
        if debug:
            raise
        _fail(e.message, e.code)
    except KeyboardInterrupt as e:
        _stopped(e)
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error worth a message
        sys.stderr.close()
        sys.exit(0)
    except OSError as e:  # the system refused what no slipsq error covers: a full disk, a closed output
        if debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        _fail(f"stopped: {e.strerror or e}{where}", 1)
    except Exception as e:
        if debug:
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (run with --debug for details)", EXIT_INTERNAL)


def _option_default(key: str) -> Any:
    """A core option's default, for a help text that must not drift from it."""
    from slipsq.config import CORE_OPTIONS

    return next(o.default for o in CORE_OPTIONS if o.key == key)


class Group(click.Group):
    """Shows the commands in the order they were added (the order an admin meets them). A Ctrl-C
    while click parses the arguments or runs a command that does not catch it ends as in
    run_guarded (one line, status 130), not as click's "Aborted!" with status 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as e:
            _stopped(e)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            _stopped(e)


@click.group(cls=Group, invoke_without_command=True, epilog=EXIT_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--queue", default=None, metavar="N|A:B",
              help="Run inline: bind NFQUEUE N, verdict every packet, block what is judged malicious. "
                   "A:B: one worker process per queue A..B (one per core), judged together.")
@click.option("--install-rules", is_flag=True,
              help="With --queue: insert the diversion rules (with --queue-bypass) and remove them on stop.")
@click.option("--queue-maxlen", type=click.IntRange(1, 1 << 20), default=None, metavar="N",
              help="With --queue: longest the kernel queue may grow before fail-open [default: config "
                   f"queue.maxlen, {_option_default('queue.maxlen')}].")
@click.option("--config", "config_path", type=GivenPath(dir_okay=False), default=None,
              help="TOML configuration file (see 'slipsq config show').")
@click.option("--state-dir", type=GivenPath(file_okay=False), default=None, envvar="SLIPSQ_STATE_DIR",
              help="Where blocks and the control socket live\n[default: /var/lib/slipsq; env SLIPSQ_STATE_DIR].")
@click.option("--alert-format", default=None, type=click.Choice(["auto", "text", "jsonl", "eve", "idmefv2", "syslog"]),
              help="With --queue: alerts on stdout as text, jsonl, eve (Suricata EVE), idmefv2 or syslog "
                   "(RFC 5424) [default: config output.format, auto].")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="slipsq")
@click.pass_context
def main(ctx: click.Context, queue: str | None, install_rules: bool, queue_maxlen: int | None,
         config_path: str | None, state_dir: str | None, alert_format: str | None, debug: bool) -> None:
    """slipsq: a behavioral intrusion prevention system for Linux gateways.

    \b
    Inline, as root:     slipsq --queue 0 --install-rules
    Offline:             slipsq replay capture.pcap
    Manage blocks:       slipsq blocks | slipsq unblock 203.0.113.7 | slipsq block IP --for 4h
    """
    ctx.ensure_object(dict)
    ctx.obj.update(debug=debug, config_path=config_path, state_dir=state_dir)
    inline = [name for name, given in (("--queue", queue is not None), ("--install-rules", install_rules),
                                       ("--queue-maxlen", queue_maxlen is not None),
                                       ("--alert-format", alert_format is not None)) if given]
    if ctx.invoked_subcommand is not None:
        if inline:  # they run the daemon; a subcommand would silently ignore them
            _fail(f"{', '.join(inline)} run{'s' if len(inline) == 1 else ''} slipsq inline and cannot be "
                  f"combined with '{ctx.invoked_subcommand}'", UsageError.code)
        return
    if queue is None:
        if inline:
            _fail(f"{', '.join(inline)} need{'s' if len(inline) == 1 else ''} --queue N (inline mode)",
                  UsageError.code)
        click.echo(ctx.get_help())
        return

    try:
        from slipsq.multiqueue import parse_queue

        queues = parse_queue(queue)
    except SlipsqError as e:
        _fail(e.message, e.code)

    def daemon() -> int:
        try:
            from slipsq.daemon import run_daemon
        except ImportError as e:
            raise SlipsqError(f"inline mode is not available in this build: {e}") from None
        from slipsq.engine import tune_gc
        from slipsq.runmode import load_config

        maxlen = queue_maxlen or load_config(config_path)["queue.maxlen"]  # the flag overrides the config
        tune_gc()
        return run_daemon(queue=queues, install_rules=install_rules, config_path=config_path,
                          state_dir=state_dir, queue_maxlen=maxlen, alert_format=alert_format)

    sys.exit(run_guarded(daemon, debug) or 0)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.find_root().obj.get("debug")) if ctx.find_root().obj else False


def _config_path(ctx: click.Context, local: str | None) -> str | None:
    if local:
        return local
    return ctx.find_root().obj.get("config_path") if ctx.find_root().obj else None


# --- replay -------------------------------------------------------------------------------------

@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--json/--no-json", "as_json", default=None,
              help="One JSON object per alert per line, then {\"summary\": ...} [default: config "
                   "output.json, false].")
@click.option("--tuples", is_flag=True,
              help="Print every 4-tuple with its behavioral letter string instead of the alerts.")
@click.option("-o", "--out", "out_dir", type=GivenPath(), default=None, metavar="DIR",
              help="Also write alerts.jsonl, alerts.log, flows.binetflow, activity.jsonl, summary.json and "
                   "timeline/<ip>.txt per host with evidence into this folder (refused when it holds earlier "
                   "results, unless --force).")
@click.option("--force", is_flag=True, help="With -o: overwrite the results of an earlier run.")
@click.option("--report", "report", is_flag=True,
              help="With -o: also DIR/report.html, one self-contained page of what happened (see 'slipsq report').")
@click.option("--separate", is_flag=True,
              help="Analyse each input on its own timeline (its own engine and summary; with -o, in "
                   "DIR/<input name>/) instead of one timeline in time order.")
@click.option("--models", "models_dir", type=GivenPath(), default=None,
              help="Folder of slipsq models [default: the models shipped with slipsq].")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "pcap", "binetflow", "zeek", "suricata", "nfdump"]),
              help="Input format; auto detects it from the content (the alerts' format: --alert-format).")
@click.option("--alert-format", default=None, type=click.Choice(["auto", "text", "jsonl", "eve", "idmefv2", "syslog"]),
              help="Alerts on stdout as text, jsonl, eve (Suricata EVE), idmefv2 or syslog (RFC 5424); with "
                   "eve, idmefv2 or syslog the summary goes to stderr, and -o DIR also gets eve.json, "
                   "alerts.idmefv2.jsonl or alerts.syslog [default: config output.format, auto: text, or "
                   "jsonl with --json].")
@click.option("--config", "config_path", type=GivenPath(dir_okay=False), default=None,
              help="TOML configuration file.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: when stderr is a terminal].")
@click.option("--processes", type=click.IntRange(1, 2), default=None,
              help="2: read a capture and keep its flow table in a second process while this one runs "
                   "the detectors (the same results, byte for byte; for one capture input). 1: all in "
                   "one process [default: 2 when two CPUs or more are available to it, counting a "
                   "container's CPU quota].")
@click.pass_context
def replay(ctx: click.Context, inputs: tuple[str, ...], as_json: bool | None, tuples: bool, out_dir: str | None,
           force: bool, report: bool, separate: bool, models_dir: str | None, fmt: str,
           alert_format: str | None, config_path: str | None, progress: bool | None,
           processes: int | None) -> None:
    """Analyse captures or flow files offline, exactly as inline mode would.

    INPUT is a pcap/pcapng file, an Argus binetflow file, a Zeek log (or log folder), a Suricata
    eve.json, an nfdump file, any of them gzip, xz or zstd compressed, or - for standard input (a
    stream: alerts print as they happen; `tcpdump -w - | slipsq replay -` works). Several inputs are
    one timeline, read in the order of their first packet or flow; an input that overlaps an
    earlier one in time is refused by name (merge them first, or --separate). Blocks decided at time
    t drop every later packet to or from that IP (counted in the summary), as the kernel would.

    Exit status: 0 every input read whole; 2 an input missing, unreadable, overlapping or damaged
    (bad rows, cut short, its reader complained: the results come first, then one line per damaged
    input); 3 bad configuration; 4 unusable models.
    """
    from slipsq.engine import tune_gc
    from slipsq.replay import ReplayOptions, run_replay

    if report and not out_dir:
        _fail("--report needs -o DIR (the report is written as DIR/report.html)", UsageError.code)
    if force and not out_dir:
        _fail("--force needs -o DIR (it lets results in DIR be overwritten)", UsageError.code)
    tune_gc()
    signal.signal(signal.SIGTERM, _terminated)  # the replay's own handler: the daemon has its own
    runs = [list(inputs)] if not separate else [[i] for i in inputs]
    code = 0
    for n, run in enumerate(runs):
        folder = out_dir
        if separate and out_dir:
            folder = str(Path(out_dir) / _out_name(run[0], n))
        plain = not (as_json or tuples) and alert_format in (None, "auto", "text")  # headings only among text
        if separate and n and plain:
            click.echo("")
        opts = ReplayOptions(inputs=run, as_json=as_json, tuples=tuples, out_dir=folder, force=force, report=report,
                             models_dir=models_dir, fmt=fmt, alert_format=alert_format,
                             config_path=_config_path(ctx, config_path),
                             progress=sys.stderr.isatty() if progress is None else progress, processes=processes)
        if separate and plain:
            click.echo(f"== {run[0]} ==")
        try:
            result = run_guarded(partial(run_replay, opts, sys.stdout), _debug(ctx))
        except SystemExit as e:  # its one line is out; with --separate, an input's own fault (2: missing,
            # unreadable, damaged; 70: a bug it hit) does not stop the others: one exit status for all
            if not separate or e.code not in (InputError.code, EXIT_INTERNAL):
                raise
            result = e.code
        code = max(code, int(result or 0))
    # what the runs leave (an engine and its detectors' state, in reference cycles) dies with the
    # process: frozen, the interpreter's last collection does not walk it all once more on the way
    # out (0.1-0.18 s after bench/replay.py's 100k-flow capture)
    gc.freeze()
    sys.exit(code)


def _out_name(path: str, n: int) -> str:
    """A folder name for one input's results with --separate -o DIR: its file name, numbered."""
    name = "stdin" if path == "-" else Path(path).name or "input"
    return f"{n + 1:02d}-{name}"


# --- models -------------------------------------------------------------------------------------

@main.group()
def models() -> None:
    """Behavioral Markov-chain models: import Stratosphere .stfm files, list what is loaded."""


@models.command("import")
@click.argument("files", nargs=-1, required=True, type=GivenPath())
@click.option("--to", "to_dir", required=True, type=GivenPath(file_okay=False),
              help="Folder to write slipsq model files (.json) into; created if missing.")
@click.pass_context
def models_import(ctx: click.Context, files: tuple[str, ...], to_dir: str) -> None:
    """Convert Stratosphere IPS .stfm model files into slipsq models (safely: no pickle code runs)."""

    def work() -> None:
        from slipsq.detect.stratosphere.markov import write_model
        from slipsq.detect.stratosphere.stfm import import_stfm

        Path(to_dir).mkdir(parents=True, exist_ok=True)
        for f in files:
            model = import_stfm(f)
            path = write_model(model, to_dir)
            click.echo(f"{f} -> {path} ({model.label}, {model.protocol}, {len(model.letters)} letters, "
                       f"threshold {model.threshold:g})")

    run_guarded(work, _debug(ctx))


@models.command("list")
@click.option("--models", "models_dir", type=GivenPath(), default=None,
              help="Folder of slipsq models [default: the models shipped with slipsq].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
@click.option("--config", "config_path", type=GivenPath(dir_okay=False), default=None,
              help="TOML configuration file (its markov.models is the folder).")
@click.pass_context
def models_list(ctx: click.Context, models_dir: str | None, as_json: bool, config_path: str | None) -> None:
    """List the models slipsq would use (--models, else the config's markov.models, else the shipped ones)."""

    def work() -> None:
        from slipsq.detect.stratosphere.markov import load_models
        from slipsq.runmode import load_config as load
        from slipsq.runmode import resolve_models_dir

        cfg = load(_config_path(ctx, config_path))
        folder = resolve_models_dir(models_dir, cfg["markov.models"] or None)
        loaded = load_models(folder)
        if not as_json:
            click.echo(f"{len(loaded)} models in {folder}")
        for m in loaded:
            if as_json:
                click.echo(json.dumps({"label": m.label, "protocol": m.protocol, "letters": len(m.letters),
                                       "threshold": m.threshold, "benign": m.benign}))
            else:
                kind = "benign " if m.benign else "malware"
                click.echo(f"  {kind}  {m.protocol:3}  {len(m.letters):6} letters  "
                           f"thr {m.threshold:<4g} {m.label}")

    run_guarded(work, _debug(ctx))


# --- config -------------------------------------------------------------------------------------

@main.group()
def config() -> None:
    """The configuration file: every key, its default and what it does."""


@config.command("show")
@click.option("--config", "config_path", type=GivenPath(dir_okay=False), default=None,
              help="Show the values this file gives (validated) instead of the defaults.")
@click.pass_context
def config_show(ctx: click.Context, config_path: str | None) -> None:
    """Print every configuration key as TOML, with its help as a comment."""

    def work() -> None:
        from slipsq.config import toml_value
        from slipsq.runmode import load_config as load

        cfg = load(_config_path(ctx, config_path))
        section = ""
        for key, value in cfg.items():
            sec, _, name = key.rpartition(".")
            if sec != section:
                click.echo(f"\n[{sec}]")
                section = sec
            click.echo(f"# {cfg.options[key].help}")
            click.echo(f"{name} = {toml_value(value)}")

    run_guarded(work, _debug(ctx))


@config.command("init")
@click.option("--allow", "allow", multiple=True, metavar="IP",
              help="Also put IP (or a CIDR network) on the allow list; repeatable.")
@click.option("--guess/--no-guess", default=True, show_default=True,
              help="Fill in the interfaces, the upstream router and your SSH client address from this machine.")
@click.pass_context
def config_init(ctx: click.Context, allow: tuple[str, ...], guess: bool) -> None:
    """Print a first configuration file: every key commented with its default and help, and the allow
    list filled in from this machine (the installer writes it to /etc/slipsq/slipsq.toml)."""

    def work() -> None:
        import os

        from slipsq import gateway
        from slipsq.allow import AllowList
        from slipsq.errors import ConfigError
        from slipsq.runmode import all_options
        from slipsq.runmode import load_config as load

        try:
            AllowList(list(allow))
        except (ValueError, SlipsqError) as e:
            raise ConfigError(f"--allow: {e}") from None
        machine = gateway.probe(os.environ) if guess else gateway.Machine()
        text = gateway.initial_config(all_options(), machine, allow)
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".toml") as fh:  # what we print must load
            fh.write(text)
            fh.flush()
            load(fh.name)
        click.echo(text, nl=False)

    run_guarded(work, _debug(ctx))


def _register_admin_commands() -> None:
    """block, unblock, blocks, status, rules, ti: they import their heavy parts only when run, so a
    replay-only machine (no libnetfilter_queue) still lists them, and a broken import is loud."""
    from slipsq import cli_inline, cli_report, top

    cli_inline.register(main)
    cli_report.register(main)  # timeline, report
    main.add_command(top.command)  # slipsq top: its own module


_register_admin_commands()


if __name__ == "__main__":  # pragma: no cover
    main()

