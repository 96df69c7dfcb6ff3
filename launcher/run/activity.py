"""Activity: which groups of an attempt have news, and the wake-up the supervisor sleeps on.

A group whose news arrives on another thread (a remote host's agent events, read by the
channel hub's reader) is event-driven: whoever queues an event for it calls ``note(group)``,
and the supervisor visits only the groups noted since its last look, instead of polling every
host every tick (launcher/run/supervisor.py). An interrupt wakes the same sleep
(``Interrupt.trigger`` sets ``event``).

No wake-up is lost: ``take()`` clears the event before it takes the noted groups, so a note
that comes after it sets the event again and the next ``wait`` returns at once.
"""
from __future__ import annotations

import threading
from typing import Hashable


class Activity:
    """One per attempt: the groups noted since the last ``take()``, and ``event`` set when there are any."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._noted: set = set()

    def note(self, group: Hashable) -> None:
        """``group`` has news (any thread; never blocks for long)."""
        with self._lock:
            self._noted.add(group)
        # Already set: the supervisor has not cleared it yet, so its take() (after its clear) will see
        # this group. Skipping the set spares its lock for every event of a busy second.
        if not self.event.is_set():
            self.event.set()

    def take(self) -> set:
        """The groups noted since the last call (the event is cleared first: see the module docstring)."""
        self.event.clear()
        with self._lock:
            noted, self._noted = self._noted, set()
        return noted

    def wait(self, timeout: float) -> None:
        """Sleep until a note, an interrupt, or ``timeout`` s."""
        self.event.wait(max(0.0, timeout))
