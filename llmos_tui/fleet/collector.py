"""The standing collector: the head's fleet journal keeps up whether or not anyone watches.

Without it the head copies the boxes' journals only while a view runs (`fleet status`, `--watch`,
F7, the benchmark). The collector is a detached, named Ray actor (``llmos-collector`` in the
``llmos`` namespace) on the head node, that runs :meth:`Fleet.poll` every ``interval_s`` seconds
in a thread of its own — the same code path as every view — into the head's journal:

- findings, changes and events of every box are copied as they happen, box-tagged, and each
  box's state (alive, unavailable, dead, stale) and since when is recorded, with nobody watching;
- its cursors are the head journal's (moved in the same transaction as each copy), so a collector
  that Ray restarts (``max_restarts=-1``) or that is started again asks each box for what comes
  next: nothing is lost, nothing is copied twice;
- views may go on polling by themselves: the ``(box, entry_id)`` unique key makes a double copy
  harmless, and a state change is recorded once (it is read and written in one transaction).

Starting it is idempotent (``get_if_exists``): a second `llmos-tui fleet collect` finds the one
that runs and says so. It is placed on the head node by Ray's ``node:__internal_head__`` resource
(the head's own resource, which a restarted head has again: node-id affinity would not come back)
and reserves no CPU. The journal path is the head's file system's: run `fleet collect` on the head.

The class is plain Python (it runs without an actor in a test or a script); :func:`start_collector`
makes the actor.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from llmos_tui.errors import LlmosError
from llmos_tui.fleet import NAMESPACE

Json = Any
COLLECTOR_NAME = "llmos-collector"
INTERVAL_S = 2.0  # a change on a box is in the head's journal within about this (plus one poll)
HEAD_RESOURCE = "node:__internal_head__"


class Collector:
    """Polls every box every ``interval_s`` seconds into the journal at ``journal_path``."""

    def __init__(self, journal_path: str, interval_s: float = INTERVAL_S, call_timeout_s: float | None = None) -> None:
        from llmos_tui.fleet.view import CALL_TIMEOUT_S, Fleet
        from llmos_tui.journal import Journal

        if interval_s <= 0:
            raise LlmosError(f"the collector's interval must be a positive number of seconds, got {interval_s:g}")
        self.journal_path = str(Path(journal_path).expanduser())
        self.interval_s = float(interval_s)
        self.journal = Journal(self.journal_path, check=False)
        self.fleet = Fleet(self.journal, call_timeout_s=call_timeout_s or CALL_TIMEOUT_S)
        self.started = time.time()
        self.rounds = 0
        self.copied = 0  # entries copied since this process started
        self.last_round: float | None = None
        self.last_round_s: float | None = None
        self.last_error = ""
        self.boxes: list[dict[str, Json]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llmos-fleet-collector", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.time()
            try:
                views = self.fleet.poll()
            except Exception as exc:  # noqa: BLE001 - one bad round (Ray busy, the disk full) is not the end
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            else:
                self.boxes = [v.to_dict() for v in views]
                self.copied += sum(v.new_entries for v in views)
                self.last_error = ""
            self.rounds += 1
            self.last_round = time.time()
            self.last_round_s = self.last_round - t0
            self._stop.wait(max(0.05, self.interval_s - self.last_round_s))

    def status(self) -> dict[str, Json]:
        """What it does and how it goes (``fleet collect --status``)."""
        return {"pid": os.getpid(), "started": self.started, "journal": self.journal_path,
                "interval_s": self.interval_s, "rounds": self.rounds, "copied": self.copied,
                "last_round": self.last_round, "last_round_s": self.last_round_s, "last_error": self.last_error,
                "boxes": list(self.boxes), "running": self._thread.is_alive()}

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(timeout=30)
        self.journal.close()
        return True


def collector_options() -> dict[str, Json]:
    """The actor's options (see the module's docstring)."""
    return {"name": COLLECTOR_NAME, "namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True,
            "max_restarts": -1, "max_task_retries": -1, "num_cpus": 0, "max_concurrency": 4,
            "resources": {HEAD_RESOURCE: 0.001}}


def start_collector(journal_path: str | Path, *, interval_s: float = INTERVAL_S, timeout_s: float = 60.0
                    ) -> dict[str, Json]:
    """Start the collector (or find the one that runs); its :meth:`Collector.status`, with
    ``found: True`` when one already ran (its journal and interval are the ones it was started
    with). Needs a connected Ray driver."""
    import ray

    found = collector_handle() is not None
    path = str(Path(journal_path).expanduser().resolve())
    handle = ray.remote(Collector).options(**collector_options()).remote(path, interval_s)
    try:
        status = ray.get(handle.status.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise LlmosError(f"the fleet collector did not answer in {timeout_s:g} s: is the head node "
                         f"({HEAD_RESOURCE}) in the cluster?") from None
    except ray.exceptions.RayActorError as exc:
        raise LlmosError(f"the fleet collector could not start: {str(exc).splitlines()[0]}") from None
    status["found"] = found
    return status  # type: ignore[no-any-return]


def collector_handle() -> Any:
    """The running collector's handle, or None."""
    import ray

    try:
        return ray.get_actor(COLLECTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def collector_status(timeout_s: float = 5.0) -> dict[str, Json] | None:
    """The running collector's status, or None when none runs (or it does not answer)."""
    import ray

    handle = collector_handle()
    if handle is None:
        return None
    try:
        return ray.get(handle.status.remote(), timeout=timeout_s)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - restarting, or its node is gone
        return None


def stop_collector(timeout_s: float = 30.0) -> bool:
    """Stop the collector for good (its cursors stay in the journal); False when none ran."""
    import ray

    handle = collector_handle()
    if handle is None:
        return False
    try:
        ray.get(handle.stop.remote(), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - it is killed below anyway
        pass
    ray.kill(handle, no_restart=True)
    return True
