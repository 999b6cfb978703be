"""The balance worker: keeps entitlement values true as events arrive, and tells notifications.

The sink tells it about every stored batch; it finds the metered entitlements the batch touches (by event
type and subject), invalidates their cached values at once (so the next check recomputes), and, when
someone listens (notification rules exist), recomputes them in its own thread and publishes the new
values. Changes to entitlements, grants and resets take the same path. Recalculations are coalesced: an
entitlement touched by ten batches while it waits is computed once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from meterd.entitlements.balance import BalanceService, EventRouter, Value
from meterd.entitlements.model import Entitlement, EntitlementType
from meterd.ingest.journal import JournalBatch

log = logging.getLogger(__name__)

Publish = Callable[[Entitlement, Value, str], None]  # (entitlement, value, "update" | "reset")


class BalanceWorker:
    def __init__(
        self,
        balances: BalanceService,
        router: EventRouter,
        load: Callable[[str], Entitlement | None],
        publish: Publish | None = None,
        wanted: Callable[[str], bool] = lambda namespace: True,
    ) -> None:
        self._balances = balances
        self._router = router
        self._load = load  # entitlement id -> entitlement
        self._publish = publish
        self._wanted = wanted  # does anyone listen in this namespace (notification rules)?
        self._dirty: dict[str, str] = {}  # entitlement id -> operation
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.published = 0

    # -- inputs (any thread) -------------------------------------------------------------------------

    def on_stored(self, batch: JournalBatch) -> None:
        hits = self._router.route(batch.rows)
        if not hits:
            return
        self._balances.on_stored((batch.first_seq, batch.last_seq), hits)
        self._mark([(e, "update") for e, _, _ in hits])

    def refresh_routes(self) -> None:
        """Entitlements may have changed in another process (cluster mode): read the routes again."""
        self._router.stale()

    def begin_write(self) -> None:
        self._balances.begin_write()

    def end_write(self) -> None:
        self._balances.end_write()

    def on_changed(self, namespace: str, entitlement_id: str, since: datetime | None) -> None:
        self._balances.invalidate(entitlement_id, since)
        self._router.stale()
        self._mark([(entitlement_id, "update")])

    def forget_all(self) -> None:
        """A customer's subjects, a feature or a meter changed: which events count for which entitlements
        may have changed, so every cached balance goes."""
        self._router.stale()
        self._balances.forget_all()

    def on_reset(self, entitlement: Entitlement) -> None:
        self._mark([(entitlement.id, "reset")])

    def _mark(self, items: list[tuple[str, str]]) -> None:
        if self._publish is None:
            return
        with self._cv:
            for entitlement_id, operation in items:
                if self._dirty.get(entitlement_id) != "reset":
                    self._dirty[entitlement_id] = operation
            self._cv.notify()

    # -- the loop ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._publish is None:
            return
        self._thread = threading.Thread(target=self._run, name="meterd-balance", daemon=True)
        self._thread.start()

    def waiting(self) -> int:
        """Entitlements marked for recalculation and not yet done."""
        with self._cv:
            return len(self._dirty)

    def healthy(self) -> bool:
        """Running (or not needed: nobody listens for recalculated values)."""
        return self._publish is None or (self._thread is not None and self._thread.is_alive())

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is waiting (tests, shutdown)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._dirty and not self._busy, timeout)

    _busy = False

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or bool(self._dirty))
                if self._stop:
                    return
                work, self._dirty = self._dirty, {}
                self._busy = True
            try:
                for entitlement_id, operation in work.items():
                    self._recalculate(entitlement_id, operation)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _recalculate(self, entitlement_id: str, operation: str) -> None:
        try:
            entitlement = self._load(entitlement_id)
            if entitlement is None or entitlement.type is not EntitlementType.METERED:
                return
            if entitlement.deleted_at is not None or not self._wanted(entitlement.namespace):
                return
            value = self._balances.value(entitlement)
            assert self._publish is not None
            self._publish(entitlement, value, operation)
            self.published += 1
        except Exception:
            log.exception("balance recalculation failed for entitlement %s", entitlement_id)
