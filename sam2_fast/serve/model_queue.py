"""One model, many users: requests take turns on the model in arrival order."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class ModelQueue:
    """First come, first served turns on the model (a ticket lock).

    Every call that runs the model (an embedding, a click, a frame of tracking) holds a turn,
    so two users never run the predictors at the same time and never see each other's state.
    A long job (tracking a video) calls :meth:`pause` between frames: the requests that
    arrived meanwhile run first, so a click stays interactive while a video is tracked.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def _wait_for(self, ticket: int) -> None:
        while ticket != self._serving:
            self._cond.wait()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for this caller's turn, run the block, hand the model to the next in line."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._wait_for(ticket)
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()

    def pause(self) -> None:
        """Inside a turn: let every caller already waiting run first, then continue."""
        with self._cond:
            if self._next_ticket == self._serving + 1:  # nobody is waiting
                return
            ticket = self._next_ticket
            self._next_ticket += 1
            self._serving += 1
            self._cond.notify_all()
            self._wait_for(ticket)

    @property
    def waiting(self) -> int:
        """Callers waiting for a turn (not counting the one running)."""
        with self._cond:
            return max(self._next_ticket - self._serving - 1, 0)
