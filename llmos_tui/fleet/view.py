"""The head's view of the fleet: every box, its state and since when, and the fleet journal.

One :meth:`Fleet.poll` is one round: Ray's node table (which boxes' nodes are alive), one call
to every reachable agent at once (its snapshot, and its journal after the head's cursor for
it), waited for together with a deadline. A box is

- ``alive``: its agent answered and its daemon answered the agent;
- ``stale``: its node is alive but the agent did not answer in time, or the agent answered and
  its daemon did not (the engine's box is there, its figures are not: the last ones are shown,
  with their age);
- ``unavailable``: no live node carries its label (the node died or left): Ray restarts its agent
  when a node with that label joins again, and the box comes back by itself;
- ``dead``: its agent is gone for good (killed, or never started on a live node): `fleet up`
  on the box starts it again.

Each box's state, since when, and what was last known of it (GPUs, engine, model, tok/s,
findings, last change) are kept in the head's own journal (``journal.fleet``), and each box's
journal entries are copied there with a per-box cursor moved in the same transaction: a box
that is down still shows its history (`llmos-tui journal list --box NAME`), and a head that
restarts carries on from its cursors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from llmos_tui.errors import LlmosError
from llmos_tui.fleet import AGENT_PREFIX, LABEL, NAMESPACE, agent_name, require_ray

if TYPE_CHECKING:
    from llmos_tui.journal.store import Journal

log = logging.getLogger("llmos_tui.fleet")

Json = Any
CALL_TIMEOUT_S = 1.5  # an agent that does not answer a poll in this time is stale this round
CHANGE_TIMEOUT_S = 900.0
CHANGE_TRIES = 3  # a change whose agent died mid-call is sent again (same key: applied once)


@dataclass
class BoxView:
    """One row of the fleet view."""

    box: str
    state: str  # alive | unavailable | dead | stale
    since: float  # in this state since (head's clock)
    why: str = ""  # what made it not alive
    node_alive: bool = False
    ray_gpus: float = 0.0  # GPUs its node gives Ray
    info: dict[str, Json] = field(default_factory=dict)  # the last snapshot summary (agent.summarize)
    seen: float | None = None  # last time it was alive
    new_entries: int = 0  # journal entries copied to the head in this round

    @property
    def alive(self) -> bool:
        return self.state == "alive"

    def to_dict(self) -> dict[str, Json]:
        return {"box": self.box, "state": self.state, "since": self.since, "why": self.why,
                "node_alive": self.node_alive, "ray_gpus": self.ray_gpus, "seen": self.seen,
                **{k: v for k, v in self.info.items() if k not in ("box", "ts")}, "info_ts": self.info.get("ts")}


class Fleet:
    """The head's side. ``journal``: the head's journal (None: nothing copied, states kept in
    memory only). Needs a Ray driver: :meth:`connect` (or a ``ray.init`` done by the caller)."""

    def __init__(self, journal: "Journal | None" = None, *, call_timeout_s: float = CALL_TIMEOUT_S,
                 copy_journal: bool = True) -> None:
        require_ray()
        self.journal = journal
        self.call_timeout_s = call_timeout_s
        self.copy_journal = copy_journal and journal is not None
        self._states: dict[str, tuple[str, float]] = {}  # without a journal
        self._info: dict[str, dict[str, Json]] = {}
        self._handles: dict[str, Any] = {}
        self.listeners: list[Callable[[BoxView, BoxView | None], None]] = []  # (now, before)
        self._last: dict[str, BoxView] = {}

    # ---- connecting ------------------------------------------------------------------------
    @staticmethod
    def connect(address: str | None = None) -> None:
        """Join the cluster at ``address`` as a driver (``auto``: the cluster this machine runs);
        Ray's token authentication stays as Ray configures it."""
        require_ray()  # first: it sets the token mode before Ray is imported
        import ray

        if ray.is_initialized():
            return
        with _real_std_streams():
            try:
                ray.init(address=address or "auto", namespace=NAMESPACE, logging_level=logging.ERROR,
                         log_to_driver=False, configure_logging=False)
            except ConnectionError as exc:
                raise LlmosError(f"no Ray cluster at {address or 'this machine'}: {exc}".splitlines()[0]) from None

    @staticmethod
    def disconnect() -> None:
        """Leave the cluster (this driver only: the cluster and its boxes go on)."""
        import ray

        if ray.is_initialized():
            ray.shutdown()

    # ---- one round -------------------------------------------------------------------------
    def poll(self) -> list[BoxView]:
        """Every box, now (see the module's docstring). Records state changes and copies new
        journal entries into the head's journal."""
        import ray

        now = time.time()
        nodes = self._nodes()
        known = set(nodes) | self._named_agents() | self._journal_boxes()
        calls: dict[Any, str] = {}
        handles: dict[str, Any] = {}
        for box in sorted(known):
            alive = nodes.get(box, (False, 0.0))[0]
            if not alive:
                continue
            handle = self._handle(box)
            if handle is None:
                continue
            handles[box] = handle
            cursors = self._cursors(box) if self.copy_journal else None
            calls[handle.poll.remote(cursors)] = box
        answers: dict[str, Json] = {}
        errors: dict[str, str] = {}
        pending = list(calls)
        deadline = now + self.call_timeout_s
        while pending:
            left = deadline - time.time()
            if left <= 0:
                break
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=left)
            for ref in ready:
                box = calls[ref]
                try:
                    answers[box] = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a box's trouble is its state, not the view's
                    errors[box] = _one_line(exc)
                    self._handles.pop(box, None)
        for ref in pending:  # left to finish on its own: its answer is dropped
            errors.setdefault(calls[ref], f"its agent did not answer in {self.call_timeout_s:g} s")
        views = []
        for box in sorted(known):
            alive, gpus = nodes.get(box, (False, 0.0))
            answer = answers.get(box)
            new_entries = 0
            if answer is not None:
                new_entries = self._copy(box, answer)
                info = {k: v for k, v in answer.items() if k not in ("journal", "journal_error")}
                if answer.get("daemon"):
                    state, why = "alive", ""
                else:
                    state, why = "stale", f"its daemon does not answer: {answer.get('error')}"
                    info = {**self._last_info(box), "error": answer.get("error")}
            elif not alive:
                if self._agent_exists(box):
                    state, why = "unavailable", f"no live node labelled {LABEL}={box}"
                else:
                    state, why = "dead", "no agent and no node: run `llmos-tui fleet up` on the box"
                info = self._last_info(box)
            elif box not in handles:
                state, why = "dead", f"its node is up but it has no agent: run `llmos-tui fleet up` on box {box}"
                info = self._last_info(box)
            else:
                state, why = "stale", errors.get(box, "no answer")
                info = self._last_info(box)
            if alive:
                info["ray_gpus"] = gpus
            elif isinstance(info.get("ray_gpus"), (int, float)):
                gpus = float(info["ray_gpus"])  # what its node gave Ray when it was last seen
            since, seen = self._record(box, state, info if state == "alive" else None, why, now)
            view = BoxView(box, state, since, why, alive, gpus, info, seen, new_entries)
            views.append(view)
            before = self._last.get(box)
            self._last[box] = view
            if before is None or before.state != view.state or new_entries or \
                    _findings_ids(before.info) != _findings_ids(view.info):
                for listener in list(self.listeners):
                    try:
                        listener(view, before)
                    except Exception:  # noqa: BLE001
                        log.exception("fleet listener failed")
        return views

    # ---- changes -----------------------------------------------------------------------------
    def change(self, box: str, verb: str, *args: Json, key: str | None = None,
               timeout_s: float = CHANGE_TIMEOUT_S) -> dict[str, Json]:
        """``apply`` / ``undo`` / ``restart`` / ``kill_switch`` on ``box`` through its agent, with an
        idempotency key (made here when not given): sent again with the same key when the agent
        died mid-call, so it is applied once."""
        import ray

        key = key or f"fleet-{uuid.uuid4().hex}"
        last = ""
        for _try in range(CHANGE_TRIES):
            if not self._nodes().get(box, (False, 0.0))[0]:  # else the call would wait for its node
                raise BoxUnreachable(f"box {box} is unavailable: no live node labelled {LABEL}={box}"
                                     + (f" ({last})" if last else ""))
            handle = self._handle(box)
            if handle is None:
                raise BoxUnreachable(f"box {box} has no agent: run `llmos-tui fleet up` on it")
            method = getattr(handle, verb)
            try:
                answer = ray.get(method.remote(*args, key=key), timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise BoxUnreachable(f"box {box} did not answer in {timeout_s:g} s (key {key}: a retry with "
                                     "this key is applied at most once)") from None
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                last = _one_line(exc)
                self._handles.pop(box, None)
                time.sleep(1.0)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                raise LlmosError(f"box {box}: {_one_line(cause)}") from None
            if isinstance(answer, dict):
                answer.setdefault("key", key)
            return answer
        raise BoxUnreachable(f"box {box} is unreachable: {last}")

    # ---- Ray's view -------------------------------------------------------------------------
    def _nodes(self) -> dict[str, tuple[bool, float]]:
        """box -> (a live node carries its label, the GPUs that node gives Ray)."""
        import ray

        out: dict[str, tuple[bool, float]] = {}
        for node in ray.nodes():
            labels = node.get("Labels") or {}
            box = labels.get(LABEL)
            if not box:
                continue
            alive = bool(node.get("Alive"))
            gpus = float((node.get("Resources") or {}).get("GPU", 0.0))
            if alive or box not in out:
                if not (box in out and out[box][0]):
                    out[box] = (alive, gpus)
        return out

    def _named_agents(self) -> set[str]:
        import ray

        try:
            names = ray.util.list_named_actors(all_namespaces=True)
        except Exception:  # noqa: BLE001
            return set()
        return {n["name"][len(AGENT_PREFIX):] for n in names
                if isinstance(n, dict) and n.get("namespace") == NAMESPACE and n.get("name", "").startswith(AGENT_PREFIX)}

    def _agent_exists(self, box: str) -> bool:
        return box in self._named_agents()

    def _handle(self, box: str) -> Any:
        import ray

        handle = self._handles.get(box)
        if handle is None:
            try:
                handle = ray.get_actor(agent_name(box), namespace=NAMESPACE)
            except ValueError:
                return None
            self._handles[box] = handle
        return handle

    # ---- the head's journal ------------------------------------------------------------------
    def _journal_boxes(self) -> set[str]:
        if self.journal is None:
            return set(self._states)
        return {row["box"] for row in self.journal.fleet.boxes()}

    def _cursors(self, box: str) -> dict[str, int]:
        assert self.journal is not None
        return self.journal.fleet.cursors(box)

    def _copy(self, box: str, answer: Mapping[str, Json]) -> int:
        pulled = answer.get("journal")
        if self.journal is None or not isinstance(pulled, dict):
            return 0
        entries = pulled.get("entries") or []
        cursors = pulled.get("cursors") or {}
        try:
            return self.journal.fleet.store(box, entries, cursors)
        except Exception as exc:  # noqa: BLE001 - the view goes on; the cursor did not move
            log.warning("could not copy box %s's journal: %s", box, exc)
            return 0

    def _last_info(self, box: str) -> dict[str, Json]:
        if box in self._last:
            return dict(self._last[box].info)
        if self.journal is not None:
            for row in self.journal.fleet.boxes():
                if row["box"] == box:
                    return dict(row.get("info") or {})
        return dict(self._info.get(box, {}))

    def _record(self, box: str, state: str, info: Mapping[str, Json] | None, why: str, now: float
                ) -> tuple[float, float | None]:
        """(since, last seen alive)."""
        if self.journal is None:
            before = self._states.get(box)
            since = before[1] if before and before[0] == state else now
            self._states[box] = (state, since)
            if info is not None:
                self._info[box] = dict(info)
            return since, now if state == "alive" else None
        since = self.journal.fleet.set_state(box, state, info=info, why=why, now=now)
        seen = None
        for row in self.journal.fleet.boxes():
            if row["box"] == box:
                seen = row.get("seen")
        return since, seen


@contextlib.contextmanager
def _real_std_streams() -> Iterator[None]:
    """Ray's driver needs sys.stdout / sys.stderr with file descriptors; a face that captures them
    (the TUI draws on its own) gets /dev/null for them while Ray starts, and keeps its own after."""
    swapped = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            usable = stream.fileno() >= 0  # Textual's streams answer -1
        except (AttributeError, OSError, ValueError):
            usable = False
        if not usable:
            swapped[name] = stream
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - Ray may keep writing to it
    try:
        yield
    finally:
        for name, stream in swapped.items():
            setattr(sys, name, stream)


class BoxUnreachable(LlmosError):
    """The box's agent could not be reached (its node is down, or it has no agent)."""


def _findings_ids(info: Mapping[str, Json]) -> list[Json]:
    return [f.get("id") for f in info.get("findings") or [] if isinstance(f, dict)]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
