"""Signed-in officers: sessions held in the console's memory only (a restart signs everyone
out), each a random token in a cookie, with its own CSRF token, ended after
`session_idle_minutes` without a request or `session_max_hours` at most. Failed sign-ins are
throttled per name: after `MAX_FAILURES` in a row the name is locked for `LOCKOUT_SECONDS`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_FAILURES = 5
LOCKOUT_SECONDS = 900.0
MAX_SESSIONS = 64


@dataclass
class Session:
    officer: str
    csrf: str
    started: float
    seen: float
    #: views of held items this session may fetch images of: view id -> item ref
    views: dict[str, str] = field(default_factory=dict)


class Sessions:
    def __init__(
        self,
        idle_seconds: float,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def start(self, officer: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes
                oldest = min(self._sessions, key=lambda t: self._sessions[t].started)
                del self._sessions[oldest]
            self._sessions[token] = Session(officer, secrets.token_urlsafe(32), now, now)
            self._failures.pop(officer, None)
        return token

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = self.clock()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(token)
            if session is not None:
                session.seen = now
            return session

    def end(self, token: str | None) -> Session | None:
        with self._lock:
            return self._sessions.pop(token, None) if token else None

    def locked(self, name: str) -> bool:
        with self._lock:
            count, since = self._failures.get(name, (0, 0.0))
            if count >= MAX_FAILURES and self.clock() - since < LOCKOUT_SECONDS:
                return True
            if count >= MAX_FAILURES:
                del self._failures[name]
            return False

    def failed(self, name: str) -> None:
        with self._lock:
            count, _ = self._failures.get(name, (0, 0.0))
            self._failures[name] = (count + 1, self.clock())
            if len(self._failures) > 10_000:  # names tried are unbounded input
                self._failures.clear()

    def _expire(self, now: float) -> None:
        gone = [
            t
            for t, s in self._sessions.items()
            if now - s.seen > self.idle_seconds or now - s.started > self.max_seconds
        ]
        for token in gone:
            del self._sessions[token]
