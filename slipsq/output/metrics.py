"""Prometheus metrics of the inline daemon: an HTTP endpoint (`[metrics] listen`) and/or a
node-exporter textfile (`[metrics] textfile`), both off by default.

The numbers are the daemon's own counters, read when Prometheus scrapes (or when the textfile is
written): a custom collector turns one `snapshot` of them into metric families through the table
METRICS, so a new counter is one row there. Nothing here is called per packet, and everything runs
in this module's own thread: the HTTP server answers one request at a time with a socket timeout, the
textfile writer replaces the file atomically every `metrics.textfile_every` seconds.

`Tally` is the one sink the daemon adds for this: it counts alerts and blocks per detector and
unblocks per kind in the worker thread, where the commands are carried out anyway.
This module must never touch the packet loop, the engine's state beyond reading counters, the
kernel or the block store, and never stops the daemon: a metrics failure is logged, inspection goes on.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from slipsq.config import Option, empty_or, positive
from slipsq.records import Alert, Block, Unblock
from slipsq.sink import Sink


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9467` or `[::1]:9467` as (address, port); ValueError with the reason. Only IP
    literals: the daemon resolves no names at start, and a metrics port is bound to an address."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"'{text}' is not ADDRESS:PORT (e.g. 127.0.0.1:9467 or [::1]:9467)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"'{text}': write an IPv6 address in brackets, e.g. [::1]:9467")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"'{text}': '{host}' is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}': the port must be a number from 1 to 65535")
    return str(addr), int(port)


OPTIONS: tuple[Option, ...] = (
    Option("metrics.listen", "", "inline: serve Prometheus metrics over HTTP on ADDRESS:PORT, e.g. "
           "\"127.0.0.1:9467\" (no authentication: keep it on loopback or a management address); read at start; "
           "\"\": off",
           empty_or(parse_listen), "\"\" or an IP address and port, e.g. 127.0.0.1:9467 or [::1]:9467"),
    Option("metrics.textfile", "", "inline: write the metrics to this file for node_exporter's textfile "
           "collector (replaced atomically, removed at stop), e.g. /var/lib/node_exporter/textfile/slipsq.prom; read "
           "at start; \"\": off", lambda v: v == "" or (v.startswith("/") and v.endswith(".prom")),
           "\"\" or an absolute path ending in .prom (node_exporter reads only those)"),
    Option("metrics.textfile_every", 15.0, "seconds between rewrites of metrics.textfile", positive, "> 0",
           duration=True),
)


class Tally(Sink):
    """Alerts and blocks per detector, unblocks per kind, counted as the worker carries them out.
    Every detector starts at 0 (Prometheus' advice: a series that appears only with its first event
    hides that first increase from rate()). Readers in other threads take `counts()`: copies of plain
    dicts (atomic under the GIL)."""

    def __init__(self, detectors: Iterable[str] | None = None) -> None:
        if detectors is None:
            from slipsq.detect import DETECTORS

            detectors = [d.name for d in DETECTORS]
        names = list(detectors)
        self.alerts: dict[str, int] = dict.fromkeys(names, 0)
        self.blocks: dict[str, int] = dict.fromkeys([*names, "manual"], 0)
        self.unblocks: dict[str, int] = dict.fromkeys(["expiry", "admin"], 0)

    def alert(self, alert: Alert) -> None:
        d = alert.evidence.detector
        self.alerts[d] = self.alerts.get(d, 0) + 1

    def block(self, block: Block) -> None:
        if block.by == "store":  # re-applied at start: decided before, by an earlier run
            return
        d = block.detector  # the deciding alert's detector, "manual" for an admin's block
        self.blocks[d] = self.blocks.get(d, 0) + 1

    def unblock(self, unblock: Unblock) -> None:
        kind = unblock.who.split(":", 1)[0]  # expiry, admin, store, allow-list, judge
        self.unblocks[kind] = self.unblocks.get(kind, 0) + 1

    def counts(self) -> dict[str, dict[str, int]]:
        return {"alerts": self.alerts.copy(), "blocks": self.blocks.copy(), "unblocks": self.unblocks.copy()}


# --- the table: metric name, kind, help, where its value is in a snapshot --------------------------

Reader = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Metric:
    """One metric family. `read(snapshot)` is a number, None (the daemon has no such counter: the
    metric is left out, never shown as 0), or for a labelled family {label value: number}."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    read: Reader
    label: str = ""


def _at(*path: str) -> Reader:
    """snapshot[path[0]][path[1]]..., None where a step is missing."""
    def read(s: Mapping[str, Any]) -> Any:
        v: Any = s
        for p in path:
            if not isinstance(v, Mapping) or p not in v:
                return None
            v = v[p]
        return v
    return read


def _first(*readers: Reader) -> Reader:
    def read(s: Mapping[str, Any]) -> Any:
        for r in readers:
            v = r(s)
            if v is not None:
                return v
        return None
    return read


METRICS: tuple[Metric, ...] = (
    Metric("slipsq_packets_total", "counter", "packets slipsq read from its NFQUEUE", _at("queue", "packets")),
    Metric("slipsq_verdicts_total", "counter", "verdicts slipsq gave, by verdict", lambda s: {
        "accept": _at("queue", "accepted")(s), "drop": _at("queue", "dropped")(s)}, "verdict"),
    Metric("slipsq_packet_errors_total", "counter", "packets slipsq could not read or verdict",
           _at("queue", "errors")),
    # the bypass counter (flows handed back to the kernel uninspected), wherever the daemon keeps it
    Metric("slipsq_bypassed_flows_total", "counter", "flows the kernel was told to pass without slipsq",
           _first(_at("bypassed"), _at("queue", "bypassed"), _at("table", "bypassed"))),
    Metric("slipsq_bypass_forced_total", "counter", "bypassed flows that switched before the queue drained "
           "(their forwarded packets may have overtaken queued ones)",
           _first(_at("bypass", "forced"), _at("table", "bypass_forced"))),
    Metric("slipsq_bypass_late_packets_total", "counter", "packets of bypassed flows queued before the kernel "
           "saw the switch's mark (the flow's forwarded packets may have overtaken them)",
           _first(_at("bypass", "late"), _at("table", "bypass_late"))),
    Metric("slipsq_queue_waiting", "gauge", "packets waiting in the kernel's queue for slipsq",
           _at("kernel", "waiting")),
    Metric("slipsq_queue_maxlen", "gauge", "packets the kernel queue holds before fail-open",
           _at("kernel", "maxlen")),
    Metric("slipsq_queue_dropped_total", "counter", "packets the kernel dropped or passed because the queue "
           "was full (fail-open passes them uninspected)", _at("kernel", "queue_dropped")),
    Metric("slipsq_queue_user_dropped_total", "counter", "packets the kernel could not hand to slipsq's socket "
           "(receive buffer full)", _at("kernel", "user_dropped")),
    Metric("slipsq_flows_open", "gauge", "flows in the flow table", _at("table", "flows_open")),
    Metric("slipsq_flows_closed_total", "counter", "flows closed by the flow table", _at("table", "flows_closed")),
    Metric("slipsq_flows_evicted_total", "counter", "flows evicted early to keep the table within its cap",
           _at("table", "evicted")),
    Metric("slipsq_flows_analysed_total", "counter", "closed flows that went through the detectors",
           _at("engine", "flows")),
    Metric("slipsq_alerts_total", "counter", "alerts (one per piece of evidence), by detector",
           _at("tally", "alerts"), "detector"),
    Metric("slipsq_blocks_total", "counter", "blocks decided since start, by detector (manual: by an admin)",
           _at("tally", "blocks"), "detector"),
    Metric("slipsq_unblocks_total", "counter",
           "blocks ended, by kind (expiry, admin, store, allow-list, judge: lifted to make room in its IPv6 network)",
           _at("tally", "unblocks"), "kind"),
    Metric("slipsq_blocks_active", "gauge", "addresses blocked now", _at("blocks_active")),
    Metric("slipsq_engine_errors_total", "counter", "detector, decoder or alert-writer calls that failed (that "
           "call's evidence is lost; slipsq goes on)", _at("engine_errors")),
    Metric("slipsq_worker_pending", "gauge", "block changes the kernel or the store refused, waiting for a retry",
           lambda s: {"kernel": _at("worker", "kernel_pending")(s), "store": _at("worker", "store_pending")(s)},
           "target"),
    Metric("slipsq_packet_loop_age_seconds", "gauge", "seconds since the packet loop last ran (the stall "
           "watchdog's measure)", _at("packet_loop_age_s")),
    Metric("slipsq_flow_table_bytes", "gauge", "memory the flow table holds for flows", _at("table_bytes")),
)


class Collector:
    """A prometheus_client collector: calls `snapshot()` once per scrape and yields METRICS from it."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]],
                 metrics: tuple[Metric, ...] = METRICS) -> None:
        self.snapshot = snapshot
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        for m in self.metrics:
            value = m.read(snap)
            if value is None:
                continue
            family = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
            if not m.label:
                yield family(m.name, m.help, value=float(value))
                continue
            present = sorted((str(k), float(v)) for k, v in value.items() if v is not None)
            if present:
                fam = family(m.name, m.help, labels=[m.label])
                for label, v in present:
                    fam.add_metric([label], v)
                yield fam

    def describe(self) -> list[Any]:
        return []  # names depend on what the daemon has: nothing to check at registration


def registry(snapshot: Callable[[], Mapping[str, Any]]) -> Any:
    """A registry of slipsq's collector and the client's process collector (CPU seconds, memory,
    open files, start time), the latter under the slipsq_ prefix: in a textfile, node_exporter's own
    process_* metrics would clash with unprefixed ones."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(snapshot))
    ProcessCollector(namespace="slipsq", registry=reg)
    return reg


def daemon_snapshot(d: Any) -> dict[str, Any]:
    """The counters of a running `slipsq.daemon.Daemon`, read from another thread: the same plain
    attributes and C counters `status` reads from the control thread (no lock, no store, no kernel
    call beyond /proc), and `len()` of the judge's copy of its active blocks."""
    import time

    k = d.source.kernel()
    c = d.engine.counters
    return {
        **d.light_status(),  # packets, verdicts, table stats; what a branch adds there is seen here
        "queue": d.source.stats(),
        "engine": {"flows": c.flows, "alerts": c.alerts, "blocks": c.blocks},
        "kernel": None if k is None else {"waiting": k.waiting, "queue_dropped": k.queue_dropped,
                                          "user_dropped": k.user_dropped, "maxlen": d.maxlen},
        "blocks_active": len(d.engine.judge.blocked()),
        "engine_errors": d.engine_errors,
        "worker": {"kernel_pending": len(d.worker.kernel_pending), "store_pending": len(d.worker.store_pending)},
        "packet_loop_age_s": time.monotonic() - d.heartbeat,
        "table_bytes": int(getattr(d.engine.table, "memory", int)()),
        "tally": d.tally.counts(),
    }


def write_atomic(path: str, data: bytes) -> None:
    """`data` as the whole of `path`, never half of it: written beside it, then renamed over it.
    Mode 0644 whatever the umask (slipsq.service has 0077): node_exporter runs as its own user. The
    temporary name does not end in .prom, so node_exporter never reads it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --- serving: HTTP and the textfile, each in its own thread -----------------------------------------

HTTP_TIMEOUT = 5.0  # seconds a client may take for its whole request: the one server thread is not held longer


def http_server(listen: str, reg: Any) -> Any:
    """A WSGI server of `reg` bound to `listen`, answering one request at a time (serve it with
    serve_forever in a thread). OSError when the address cannot be bound."""
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    host, port = parse_listen(listen)

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        request_queue_size = 8

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that timed out or went away: its problem, not a traceback in the daemon's log

    class Handler(WSGIRequestHandler):
        timeout = HTTP_TIMEOUT

        def handle(self) -> None:
            # the socket timeout bounds each read, not the request: a client trickling a byte now
            # and then would hold the one server thread (and every scrape) as long as it liked
            cut = threading.Timer(self.timeout, self._cut)
            cut.daemon = True
            cut.start()
            try:
                super().handle()
            finally:
                cut.cancel()

        def _cut(self) -> None:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)  # its read returns: the request ends
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:  # a scrape every 15 s is no news
            pass

    return make_server(host, port, make_wsgi_app(reg), server_class=Server, handler_class=Handler)


class Exporter:
    """The metrics a config asks for: `start()` binds and starts the threads (a failure is logged,
    the daemon goes on), `stop()` ends them and removes the textfile (a stopped slipsq has no numbers)."""

    def __init__(self, listen: str, textfile: str, every: float, snapshot: Callable[[], Mapping[str, Any]],
                 log: Callable[[str], None]) -> None:
        self.listen, self.textfile, self.every = listen, textfile, every
        self.snapshot, self.log = snapshot, log
        self.server: Any = None
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._last_error = ""

    @classmethod
    def from_config(cls, cfg: Any, snapshot: Callable[[], Mapping[str, Any]],
                    log: Callable[[str], None]) -> Exporter:
        return cls(cfg["metrics.listen"], cfg["metrics.textfile"], float(cfg["metrics.textfile_every"]), snapshot, log)

    @property
    def enabled(self) -> bool:
        return bool(self.listen or self.textfile)

    def start(self) -> None:
        if not self.enabled:
            return
        reg = registry(self.snapshot)
        if self.listen:
            try:
                self.server = http_server(self.listen, reg)
            except OSError as e:
                self.log(f"cannot serve metrics on {self.listen}: {e.strerror or e}; running without them")
            else:
                self._spawn(self.server.serve_forever, "slipsq-metrics-http")
                self.log(f"metrics on http://{self.listen}/metrics")
        if self.textfile:
            self._writer = self._spawn(lambda: self._write_every(reg), "slipsq-metrics-textfile")

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        return t

    def write(self, reg: Any) -> bool:
        """One atomic rewrite of the textfile. A failure is logged once until it changes or the file
        can be written again."""
        from prometheus_client import generate_latest

        try:
            write_atomic(self.textfile, generate_latest(reg))
        except Exception as e:  # a full disk, a missing folder, a bug: never the daemon's end
            msg = f"cannot write metrics to {self.textfile}: {type(e).__name__}: {e}"
            if isinstance(e, OSError) and e.errno == errno.EROFS:
                msg += " (under systemd: let slipsq.service write there, ReadWritePaths=)"
            if msg != self._last_error:
                self.log(msg + f" (retrying every {self.every:g} s)")
            self._last_error = msg
            return False
        if self._last_error:
            self.log(f"metrics written to {self.textfile} again")
            self._last_error = ""
        return True

    def _write_every(self, reg: Any) -> None:
        self.write(reg)
        while not self._stop.wait(self.every):
            self.write(reg)

    def stop(self) -> None:
        """At once (the packet loop calls it on its way down, before the diversion is removed): the
        HTTP server shuts down in the background (a request in flight may take HTTP_TIMEOUT), the
        textfile writer is joined (one write at most) and its file removed."""
        self._stop.set()
        server, self.server = self.server, None
        if server is not None:
            def close() -> None:
                server.shutdown()
                server.server_close()

            threading.Thread(target=close, name="slipsq-metrics-stop", daemon=True).start()
        if self._writer is not None:
            self._writer.join(timeout=2)
        if self.textfile:
            try:
                os.unlink(self.textfile)
            except OSError:
                pass
