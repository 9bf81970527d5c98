"""The doctor's canary: the liveness probe (``engine.probe.run_canary``) with the policy's
limits, its last result, and the flag that tells the doctor's own probes from the operator's
requests. A configuration that answers the canary is marked known good in the journal.

Also the two journal facts the doctor needs about configurations: the active one's id, and
that the journal's active configuration is what the engine runs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from llmos_tui.engine.probe import CanaryResult, run_canary
from llmos_tui.journal.port import JournalPort

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.doctor.policy import Policy
    from llmos_tui.engine.supervisor import Supervisor
    from llmos_tui.journal import Journal


class Canary:
    """``run()`` probes the engine now (blocking, any thread but a UI's); ``last`` is its result;
    ``probing`` is set while the doctor's own requests run (they are not the operator's)."""

    def __init__(self, supervisor: "Supervisor | None", journal: JournalPort, policy: "Policy") -> None:
        self.supervisor = supervisor
        self.journal = journal
        self.policy = policy
        self.probing = threading.Event()
        self.last: CanaryResult | None = None

    def run(self, *, timeout: float | None = None, max_tokens: int | None = None,
            max_wall_ms: float | None = None, ready_timeout: float = 5.0) -> CanaryResult:
        self.probing.set()
        try:
            result = run_canary(
                self.supervisor,
                timeout=self.policy.canary_timeout_s if timeout is None else timeout,
                max_tokens=self.policy.canary_max_tokens if max_tokens is None else max_tokens,
                max_wall_ms=max_wall_ms, ready_timeout=ready_timeout)
        finally:
            self.probing.clear()
        self.last = result
        if result.ok and self.journal.available:
            self._mark_good()
        return result

    def _mark_good(self) -> None:
        config_id = active_config_id(self.journal)
        if config_id is None:
            return
        cfg = self.journal.safe(lambda j: j.get_config(config_id))
        if cfg is not None and cfg.standing == "unverified":
            self.journal.safe(lambda j: j.mark_good(config_id))


def active_config_id(journal: JournalPort) -> int | None:
    active = journal.safe(lambda j: j.active_config())
    return active.id if active is not None else None


def ensure_config(journal: JournalPort, supervisor: "Supervisor | None") -> None:
    """The journal's active configuration must be what the engine runs (repairs and undo build on it)."""
    if not journal.available or supervisor is None:
        return
    params = supervisor.params

    def ensure(j: "Journal") -> None:
        active = j.active_config()
        if active is not None and {**active.params, "model_path": active.model_path} == params.to_dict():
            return
        j.record_config(params, source="operator", note="the configuration the doctor found running")

    journal.safe(ensure)
