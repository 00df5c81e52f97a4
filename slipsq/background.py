"""A bounded mailbox with its own thread, for work that may be slow and must never hold up whoever
hands it over (the daemon's worker thread, which carries out blocks): hooks (slipsq.hooks) and the
syslog sender (slipsq.output.syslog).

`offer(item)` never waits: when the mailbox is full the item is dropped and counted (a stuck
receiver loses its own messages, never a block). The handler runs in the mailbox's thread only; an
exception from it is counted and handed to `on_error`, and the thread goes on. This module decides
nothing and does no I/O of its own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self, name: str, handler: Callable[[T], None], maxlen: int = 64,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        if maxlen <= 0:
            raise ValueError("maxlen must be > 0")
        self.name = name
        self.handler = handler
        self.on_error = on_error
        self.maxlen = maxlen
        self.dropped = 0  # offered while full
        self.errors = 0  # handler exceptions
        self.handled = 0
        self._items: deque[T] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def offer(self, item: T) -> bool:
        """Queue `item`; False (and counted) when the mailbox is full or stopped. O(1), never waits
        on the handler: the lock is only ever held for a deque operation."""
        with self._cv:
            if self._stop or len(self._items) >= self.maxlen:
                self.dropped += 1
                return False
            self._items.append(item)
            self._cv.notify()
        return True

    def full(self) -> bool:
        """A hint for a producer that would rather not build an item that cannot be queued."""
        return len(self._items) >= self.maxlen

    def pending(self) -> int:
        return len(self._items)

    def stop(self, timeout: float = 5.0) -> bool:
        """Handle what is queued (for at most `timeout` seconds), then end the thread. False when
        it did not end in time (it is a daemon thread: it cannot keep the process alive)."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        if not self._started:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._stop:
                    self._cv.wait()
                if not self._items:
                    return
                item = self._items.popleft()
            try:
                self.handler(item)
                self.handled += 1
            except Exception as e:  # one bad item must not end the thread
                self.errors += 1
                if self.on_error is not None:
                    self.on_error(e)
