"""The screen of `slipsq top` as pure functions: `View` holds the daemon's last answers and the
admin's selection and prompt, `View.key` turns a key into what to do, `render` turns a View into the
lines of a terminal of any size. No I/O, no curses, no clock but the one passed in (the header's time
of day aside), so every screen can be tested without a terminal. slipsq.top talks and draws.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slipsq.records import printable

POLL = 1.0  # seconds between status requests (and redraws)
KEEP_ALERTS = 200
LOOP_LATE = 2.0  # the packet loop returns at least once a second (daemon.IDLE_WAKE): later than this is news

NORMAL, BOLD, REVERSE = 0, 1, 2
Line = tuple[str, int]


@dataclass
class View:
    """What the screen shows: the daemon's last answers, the admin's selection and prompt."""

    state_dir: str
    interval: float = POLL
    status: dict[str, Any] | None = None
    down: str = "connecting"  # why there is no status now ("" while the daemon answers)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    blocks_at: float = 0.0  # time.monotonic() of the block list: remaining counts down from it
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_ALERTS))
    rates: dict[str, float] = field(default_factory=dict)
    selected: int = 0
    confirm: str = ""  # the IP waiting for y/n
    message: str = ""
    _last: tuple[float, dict[str, Any]] | None = None

    def take_status(self, status: dict[str, Any] | None, why_not: str, now: float) -> None:
        """A status answer (None: no daemon, `why_not` says why)."""
        if status is None:
            self.status, self.down, self._last, self.rates = None, why_not, None, {}
            self.blocks = []
            return
        if self._last is not None and status.get("pid") == self._last[1].get("pid"):
            self.rates = rates(self._last[1], status, now - self._last[0])
        elif self._last is not None:  # a restarted daemon: its counters start again
            self.rates = {}
        self.status, self.down, self._last = status, "", (now, status)
        for a in status.get("last_alerts") or []:
            if a not in self.alerts:  # the daemon repeats its last few on every answer
                self.alerts.append(a)

    def take_blocks(self, blocks: list[dict[str, Any]], now: float) -> None:
        keep = self.selected_ip()
        self.blocks = sorted(blocks, key=lambda b: (b.get("remaining") is None, b.get("remaining") or 0, b["ip"]))
        self.blocks_at = now
        ips = [b["ip"] for b in self.blocks]
        self.selected = ips.index(keep) if keep in ips else min(self.selected, max(0, len(ips) - 1))

    def take(self, item: tuple[Any, ...]) -> None:
        """One result the Poller posted."""
        if item[0] == "status":
            self.take_status(item[1], item[2], item[3])
        elif item[0] == "blocks":
            self.take_blocks(item[1], item[2])
        else:
            self.message = item[1]

    def selected_ip(self) -> str:
        return str(self.blocks[self.selected]["ip"]) if 0 <= self.selected < len(self.blocks) else ""

    def key(self, key: str) -> str:
        """One key (curses' name for it: 'KEY_UP', 'j', 'u', ...). Returns the IP to unblock once
        the admin confirmed, 'quit', or ''."""
        if not self.confirm:
            self.message = ""  # read: the next key brings the key help back
        if self.confirm:
            ip, self.confirm = self.confirm, ""
            if key in ("y", "Y"):
                self.message = f"unblocking {ip} ..."
                return ip
            self.message = f"{ip} stays blocked"
            return ""
        if key in ("q", "Q"):
            return "quit"
        if key in ("KEY_DOWN", "j"):
            self.selected = min(self.selected + 1, max(0, len(self.blocks) - 1))
        elif key in ("KEY_UP", "k"):
            self.selected = max(self.selected - 1, 0)
        elif key in ("u", "U"):
            ip = self.selected_ip()
            if not ip:
                self.message = "no block selected"
            elif self.down:
                self.message = f"the daemon is not answering; 'slipsq unblock {ip}' acts without it"
            else:
                self.confirm = ip
        return ""


def rates(before: dict[str, Any], now: dict[str, Any], dt: float) -> dict[str, float]:
    """Per-second rates of the cumulative counters between two status answers `dt` seconds apart."""
    if dt <= 0:
        return {}

    def per_s(get: Callable[[dict[str, Any]], Any]) -> float:
        try:
            return max(0.0, (float(get(now)) - float(get(before))) / dt)
        except (KeyError, TypeError, ValueError):
            return 0.0

    return {"packets": per_s(lambda s: s["packets"]),
            "verdicts": per_s(lambda s: s["accepted"] + s["dropped"]),
            "dropped": per_s(lambda s: s["dropped"]),
            "flows": per_s(lambda s: s["table"]["flows_closed"]),
            "alerts": per_s(lambda s: s["alerts"])}


def num(n: Any) -> str:
    """1234567 -> '1,234,567'; '?' for a missing or unknown (-1) count."""
    return f"{n:,}" if isinstance(n, int) and n >= 0 else "?"


def rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 10 else f"{r:.1f}"


def left(seconds: float | None) -> str:
    if seconds is None:
        return "no expiry"
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _clock(iso: str) -> str:
    """'2026-12-05T15:40:01.123Z' -> '15:40:01' (the alert's decision time, UTC as the log)."""
    return iso[11:19] if len(iso) >= 19 else iso


def render(v: View, width: int, height: int, now: float) -> list[Line]:
    """The screen as at most `height` lines of at most `width` characters each, with an attribute.
    `now` is time.monotonic() (for the blocks' time left)."""
    if width < 1 or height < 1:
        return []
    st = v.status
    head = (f" slipsq top  pid {st.get('pid')}  up {left(st.get('uptime', 0))}  NFQUEUE {st.get('queue')}  "
            f"{st.get('backend', '')}  fail-open {'on' if st.get('fail_open') else 'OFF'}" if st else
            " slipsq top")
    clock = datetime.now(UTC).strftime("%H:%M:%S UTC ")  # as the alerts' times and the logs
    lines: list[Line] = [(head.ljust(width - len(clock)) + clock if width > len(head) + len(clock) else head,
                          REVERSE)]
    body: list[Line] = []
    if st is None:
        body += [(f"slipsq is not running: {v.down}", BOLD),
                 (f"(state dir {v.state_dir}; asking again every {v.interval:g} s)", NORMAL),
                 ("With --install-rules the diversion fails open: traffic flows uninspected.", NORMAL)]
    else:
        body += _counters(st, v.rates)
    foot = (f"unblock {v.confirm}? y/n" if v.confirm else v.message or
            "up/down j/k select   u unblock   q quit")
    room = height - len(lines) - 1  # the footer's line
    if st is not None and room > len(body):
        blocks, alerts = _blocks(v, now), _alerts(v)
        rest = room - len(body) - 1
        # the alerts get what they need up to half the room, the blocks the rest (at least 2 lines)
        nb = min(len(blocks), max(rest - min(len(alerts), rest // 2), 2))
        shown = _window(blocks[1:], v.selected, nb - 1) if nb > 1 else []
        body += [("", NORMAL), *blocks[:1], *shown, *alerts]
    lines += body[:max(0, room)]
    if height > 1:
        lines += [("", NORMAL)] * (height - 1 - len(lines))
        lines.append((" " + foot, REVERSE))
    # escaped before it is cut: a description quotes DNS names of any bytes, and curses refuses a NUL
    # (ValueError: the view would end) and moves the cursor for a newline or a tab
    return [(fit(printable(text), width), attr) for text, attr in lines[:height]]


def cells(ch: str) -> int:
    """Terminal columns one character takes: 2 for East Asian wide and full-width characters (CJK,
    most emoji), 0 for combining marks, 1 otherwise."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def columns(text: str) -> int:
    """Terminal columns `text` takes (see cells)."""
    return len(text) if text.isascii() else sum(cells(ch) for ch in text)


def fit(text: str, width: int) -> str:
    """The longest start of `text` that fills at most `width` terminal columns (a line cut by
    characters would run over the edge with wide ones, and curses wraps it onto the next line)."""
    if text.isascii():
        return text[:width]
    used = 0
    for i, ch in enumerate(text):
        used += cells(ch)
        if used > width:
            return text[:i]
    return text


def _counters(st: dict[str, Any], r: dict[str, float]) -> list[Line]:
    t = st.get("table") or {}
    k = st.get("kernel") or {}
    mem = st.get("memory") or {}
    w = st.get("worker") or {}
    pending = int(w.get("kernel_pending", 0)) + int(w.get("store_pending", 0))
    age = float(st.get("packet_loop_age_s") or 0.0)
    out = [
        (f"packets {num(st.get('packets'))}  {rate(r.get('packets', 0.0))}/s   verdicts "
         f"{rate(r.get('verdicts', 0.0))}/s   dropped {num(st.get('dropped'))} ({rate(r.get('dropped', 0.0))}/s)"
         f"   errors {num(st.get('errors'))}", NORMAL),
        (f"flows {num(t.get('flows_open'))} open  {num(t.get('flows_closed'))} closed "
         f"({rate(r.get('flows', 0.0))}/s)  evicted {num(t.get('evicted'))}   engine errors "
         f"{num(st.get('engine_errors'))}", NORMAL),
        (f"queue {num(k.get('waiting'))}/{num(k.get('maxlen'))} waiting  kernel dropped "
         f"{num(k.get('queue_dropped'))}  user dropped {num(k.get('user_dropped'))}   memory "
         f"{mem.get('rss_kb', 0) / 1024:.1f} MB (flow table {mem.get('table_bytes', 0) / 2**20:.1f} MB)", NORMAL),
        (f"alerts {num(st.get('alerts'))}   blocks {num(st.get('blocks_active'))} active, "
         f"{num(st.get('blocks_decided'))} decided since start"
         + (f"   {pending} block changes waiting for a retry" if pending else ""), NORMAL),
    ]
    if age > LOOP_LATE:
        out.append((f"the packet loop has not run for {age:.0f} s", BOLD))
    return out


def _blocks(v: View, now: float) -> list[Line]:
    out: list[Line] = [(f"{f'BLOCKS ({len(v.blocks)})':<41} {'time left':>10}  {'detector':<12}  reason", BOLD)]
    for i, b in enumerate(v.blocks):
        rem = b.get("remaining")
        rem = None if rem is None else float(rem) - (now - v.blocks_at)
        mark = ">" if i == v.selected else " "
        out.append((f"{mark} {b['ip']:<39} {left(rem):>10}  {b.get('detector') or '-'!s:<12}  "
                    f"{b.get('reason', '')} (by {b.get('by', '?')})", REVERSE if i == v.selected else NORMAL))
    return out


def _alerts(v: View) -> list[Line]:
    out: list[Line] = [("ALERTS (newest first, decision time UTC)", BOLD)]
    for a in reversed(v.alerts):
        out.append((f"  {_clock(str(a.get('time', '')))} {a.get('action', '')!s:<5} "
                    f"{a.get('detector', '')!s:<12} {a.get('offender', '')!s:<15} "
                    f"{a.get('description', '')}", NORMAL))
    return out


def _window(rows: list[Line], selected: int, n: int) -> list[Line]:
    """`n` rows of `rows` that keep the selected one in sight."""
    if n <= 0:
        return []
    start = min(max(0, selected - n + 1), max(0, len(rows) - n))
    return rows[start:start + n]
