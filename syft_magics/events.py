"""An event stream that workers and clients publish to, and panels subscribe to.

The serving path only calls :meth:`EventStream.emit` (a ring-buffer append and
a call per subscriber); anything slow, such as rendering or writing a log line,
belongs to a subscriber, which should hand work to its own thread or timer if it
is not cheap. Subscribers run in the emitting thread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional

log = logging.getLogger(__name__)


class Event:
    """One thing that happened: ``kind`` (e.g. ``"command"``, ``"share"``, ``"free"``) and its fields."""

    __slots__ = ("kind", "time", "data")

    def __init__(self, kind: str, time: float, data: Optional[Dict[str, Any]] = None) -> None:
        self.kind = kind
        self.time = time
        self.data = data if data is not None else {}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and (self.kind, self.time, self.data) == (other.kind, other.time, other.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Event(kind={self.kind!r}, time={self.time!r}, data={self.data!r})"


Subscriber = Callable[[Event], None]


class EventStream:
    """Recent events in a bounded ring, running totals by kind, and live subscribers."""

    def __init__(self, history: int = 500) -> None:
        self.recent: Deque[Event] = deque(maxlen=history)
        self.totals: Counter = Counter()
        self._subscribers: List[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every new event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not callback]

        return unsubscribe

    def emit(self, kind: str, **data: Any) -> Event:
        """Record an event and pass it to every subscriber; a failing subscriber is dropped."""
        event = Event(kind, time.time(), data)
        self.recent.append(event)
        self.totals[kind] += 1
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:  # a broken panel must never break serving
                log.warning("event subscriber %r failed on %r and was removed", callback, event.kind, exc_info=True)
                with self._lock:
                    self._subscribers = [s for s in self._subscribers if s is not callback]
        return event

    def of_kind(self, kind: str) -> List[Event]:
        """The recent events of one kind, oldest first."""
        return [e for e in list(self.recent) if e.kind == kind]
