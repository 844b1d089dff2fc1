"""The server's sessions: an uploaded image with its embedding, or a video with its tracking
state, kept in an LRU store bounded by count, memory and idle time."""

from __future__ import annotations

import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np


def tensor_bytes(obj: Any, _seen: Optional[set] = None) -> int:
    """Bytes held by the tensors and arrays reachable from ``obj`` through dicts, lists,
    tuples and the attributes of this package's objects (each counted once; models excluded)."""
    import torch

    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if type(obj).__module__.startswith("sam2_fast.") and hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


@dataclass
class Session:
    """What every session has: its id, its own folder in the server's temp folder, the bytes
    it holds (for the memory bound) and a lock held while a request works on it."""

    id: str
    folder: Path
    nbytes: int = 0
    last_used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    kind = "session"

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class ImageSession(Session):
    """An uploaded image: its pixels and a predictor holding its embedding; ``last`` is the
    latest segmentation (prompts, masks, scores), drawn by the overlay endpoint."""

    image: Optional[np.ndarray] = None
    predictor: Any = None
    last: Optional[Dict[str, Any]] = None

    kind = "image"

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class VideoSession(Session):
    """An uploaded video: its frames, the predictor's tracking state, the prompts given per
    (frame, object) and the tracked masks (frame -> object -> COCO RLE)."""

    name: str = ""
    source: Any = None
    state: Any = None
    fps: float = 24.0
    prompts: Dict[Tuple[int, int], Any] = field(default_factory=dict)
    tracked: Dict[int, Dict[int, dict]] = field(default_factory=dict)

    kind = "video"

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()
        self.state = None
        super().close()


class SessionNotFound(KeyError):
    """No live session of that kind has this id (never existed, deleted, evicted or expired)."""

    def __init__(self, kind: str, session_id: str, ttl_s: float) -> None:
        super().__init__(session_id)
        self.message = (
            f"no {kind} with id {session_id!r}: it does not exist, was deleted, or expired "
            f"(sessions expire after {ttl_s:g} s unused and the oldest go when the server is full); "
            f"upload the {kind} again"
        )

    def __str__(self) -> str:
        return self.message


class SessionStore:
    """Sessions by id, least recently used first. Adding or growing a session evicts the
    least recently used idle ones while there are more than ``max_sessions`` or they hold
    more than ``max_bytes``; a session unused for ``ttl_s`` seconds expires. A session that a
    request is working on (its lock held) is never evicted."""

    def __init__(self, max_sessions: int, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._sessions: "OrderedDict[str, Session]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._sessions.values())

    def add(self, session: Session) -> None:
        with self._lock:
            session.last_used = self._clock()
            self._sessions[session.id] = session
            closed = self._evict(keep=session.id)
        self._close(closed)

    def get(self, session_id: str, kind: str) -> Session:
        """The live session ``session_id`` of ``kind`` (marked as just used), else
        :class:`SessionNotFound`."""
        with self._lock:
            closed = self._expire()
            session = self._sessions.get(session_id)
            if session is not None and session.kind == kind:
                session.last_used = self._clock()
                self._sessions.move_to_end(session_id)
        self._close(closed)
        if session is None or session.kind != kind:
            raise SessionNotFound(kind, session_id, self.ttl_s)
        return session

    def resize(self, session: Session, nbytes: int) -> None:
        """Record that ``session`` now holds ``nbytes`` and evict others if that is too much."""
        with self._lock:
            session.nbytes = nbytes
            closed = self._evict(keep=session.id)
        self._close(closed)

    def delete(self, session_id: str, kind: str) -> None:
        session = self.get(session_id, kind)
        with self._lock:
            self._sessions.pop(session_id, None)
        with session.lock:  # let a request still working on it finish first
            session.close()

    def close_all(self) -> None:
        with self._lock:
            closed = list(self._sessions.values())
            self._sessions.clear()
        self._close(closed)

    def _expire(self) -> List[Session]:
        now = self._clock()
        expired = [s for s in self._sessions.values() if now - s.last_used > self.ttl_s and not s.lock.locked()]
        for s in expired:
            del self._sessions[s.id]
        return expired

    def _evict(self, keep: str) -> List[Session]:
        closed = self._expire()
        for s in list(self._sessions.values()):  # least recently used first
            total = sum(x.nbytes for x in self._sessions.values())
            if len(self._sessions) <= self.max_sessions and total <= self.max_bytes:
                break
            if s.id != keep and not s.lock.locked():
                del self._sessions[s.id]
                closed.append(s)
        return closed

    @staticmethod
    def _close(sessions: List[Session]) -> None:
        for s in sessions:
            s.close()
