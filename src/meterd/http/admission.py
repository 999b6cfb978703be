"""Admission control for ingest: a bounded number of requests in progress, the rest refused at once.

Under overload the costly part of an ingest request is the event loop's own work (reading and decoding the
body) and the wait for the journal's commit. A request beyond `limit` is answered 429 with Retry-After before
its body is read, so refusing costs little and the requests already admitted keep their latency."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from meterd.core.errors import OverloadedError


class IngestGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0  # one event loop: no lock needed
        self.refused = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.active >= self.limit:
            self.refused += 1
            raise OverloadedError(
                f"{self.limit} ingest requests are already in progress (ingest.max_concurrent_requests); retry shortly",
                retry_after=1,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
