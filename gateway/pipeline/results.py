"""The way back, first half: results fetched from the analysis server into the spool.

`ResultsPoller.poll_once` asks the results channel (docs/protocol.md) what waits after the
spool's cursor, fetches each result sealed to the gateway's key and keeps it durably in the
spool (`spool.returns`) before it moves the cursor past it: a crash between the two fetches
that result again, and keeping it again is one file. Nothing is acknowledged here - a result
is acknowledged to the server only once PACS stored it. `run` polls every
`results.poll_seconds`, and after a failure waits longer each time (up to
`results.max_backoff_seconds`).
"""

from __future__ import annotations

import threading

from gateway.forward.results import ResultsClient, ResultsError
from gateway.logs import get_logger
from gateway.spool.returns import Returns

log = get_logger("gateway.results")


class ResultsPoller:
    def __init__(
        self,
        client: ResultsClient,
        returns: Returns,
        poll_seconds: float,
        max_backoff_seconds: float,
    ) -> None:
        self.client = client
        self.returns = returns
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._stop = threading.Event()

    def poll_once(self) -> int:
        """Fetch what waits into the spool; how many results were kept."""
        cursor = self.returns.cursor()
        listed, following = self.client.waiting(cursor)
        for waiting in listed:
            sealed = self.client.fetch(waiting)
            self.returns.put(waiting.result, waiting.study, waiting.cursor, sealed.body)
            self.returns.set_cursor(waiting.cursor)
        if following > self.returns.cursor():
            self.returns.set_cursor(following)
        if listed:
            log.info("results.fetched", count=len(listed))
        return len(listed)

    def run(self) -> None:
        """Poll until `stop`."""
        wait = self.poll_seconds
        while not self._stop.wait(wait):
            try:
                self.poll_once()
                wait = self.poll_seconds
            except ResultsError as exc:
                wait = min(max(wait * 2, self.poll_seconds), self.max_backoff_seconds)
                log.warning("results.poll_failed", reason=exc.reason, retry_in=wait)

    def stop(self) -> None:
        self._stop.set()
