"""The Ray side of distributed tuning: a trial is a Ray task placed on its box by node label.

``RayExecutor`` implements ``fleet.tune.TrialExecutor`` on a Ray cluster (``ray.init`` done by the
caller). Each box is a node labelled ``llmos/box=<name>``; a trial, a description, a verdict or an
apply is a task with ``label_selector={"llmos/box": name}`` (zero CPUs: the work is the box
daemon's, not Ray's) that runs ``calls.<op>(box, ...)`` on that node. ``calls`` is picklable:

- ``DaemonCalls`` (default): the box's ``llmos-tui serve`` daemon on that node, through its
  owner-only control socket (``fleet.trials.run_box_trial``); the socket is found in the runtime
  folder of the user Ray runs as, or given.
- a box agent (``agent=``, a function box -> actor handle): the fleet's box agent, whose
  ``run_trial(params, spec)`` calls the same ``run_box_trial``.
- anything else with ``describe / trial / verify / apply`` (the tests' recorded surfaces).

A task that raises, a worker or node that dies, a node that leaves the cluster: a failed trial
with the reason. The driver's deadlines (``ray.wait`` with a timeout) cover a box that hangs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from llmos_tui.fleet.tune import BoxInfo, JsonDict, failure

LABEL = "llmos/box"


def box_nodes() -> dict[str, bool]:
    """Box name -> alive, from the cluster's nodes and their ``llmos/box`` labels (a box whose node
    restarted has two entries: alive wins)."""
    import ray

    out: dict[str, bool] = {}
    for node in ray.nodes():
        labels = node.get("Labels") or node.get("labels") or {}
        name = labels.get(LABEL)
        if name:
            out[name] = out.get(name, False) or bool(node.get("Alive"))
    return out


class DaemonCalls:
    """A box's daemon on the node the task runs on."""

    def __init__(self, socket: str | None = None, runtime_dir: str | None = None) -> None:
        self.socket = socket
        self.runtime_dir = runtime_dir

    def _client(self) -> Any:
        from llmos_tui.errors import LlmosError
        from llmos_tui.serve.client import DaemonClient, find_daemons

        path = self.socket
        if path is None:
            if self.runtime_dir is None:
                from llmos_tui.paths import default_paths

                folder = Path(default_paths().runtime_dir)
            else:
                folder = Path(self.runtime_dir)
            found = find_daemons(folder)
            if not found:
                raise LlmosError(f"no llmos-tui serve daemon on this box (looked in {folder})")
            path = str(found[0])
        return DaemonClient(path)

    def describe(self, box: str, spec: JsonDict) -> JsonDict:
        from llmos_tui.fleet.trials import describe_box

        with self._client() as client:
            return describe_box(client, spec)

    def trial(self, box: str, params: JsonDict, spec: JsonDict) -> JsonDict:
        from llmos_tui.errors import LlmosError
        from llmos_tui.fleet.trials import run_box_trial

        try:
            client = self._client()
        except LlmosError as exc:
            return failure("error", f"box {box}: {exc}", box, params)
        with client:
            return run_box_trial(client, params, {**spec, "box": box})

    def verify(self, box: str, candidate: JsonDict, spec: JsonDict) -> JsonDict:
        from llmos_tui.fleet.trials import verify_on_box

        with self._client() as client:
            return verify_on_box(client, candidate, spec)

    def apply(self, box: str, changes: JsonDict, reason: str) -> JsonDict:
        with self._client() as client:
            return client.apply(changes, reason=reason)


def _on_box(calls: Any, op: str, box: str, *args: Any) -> JsonDict:
    """The task body, on the box's node."""
    result = getattr(calls, op)(box, *args)
    if isinstance(result, dict) and op == "trial":
        import ray

        result.setdefault("box", box)
        try:  # where it really ran: the node's own label (the tests check the placement)
            result["ran_on"] = ray.get_runtime_context().get_node_labels().get(LABEL)
        except Exception:  # noqa: BLE001
            pass
    return result


class RayExecutor:
    """Trials as Ray tasks on labelled nodes. ``boxes``: known descriptions (else each labelled
    node is asked to describe itself). ``agent``: box -> the box agent's actor handle (its
    ``run_trial`` then runs the trial instead of a task)."""

    def __init__(self, calls: Any | None = None, *, boxes: list[BoxInfo] | None = None, spec: JsonDict | None = None,
                 agent: Callable[[str], Any] | None = None, call_timeout: float = 120.0) -> None:
        import ray

        self._ray = ray
        self.calls = calls if calls is not None else DaemonCalls()
        self.agent = agent
        self.spec = dict(spec or {})
        self.call_timeout = call_timeout
        self._known = {b.name: b for b in boxes or []}
        self.left_out: dict[str, str] = {}  # box -> why it could not describe itself
        self._refs: dict[Any, tuple[str, str, JsonDict]] = {}  # ref -> (handle, box, params)
        self._n = 0
        self._nodes: tuple[float, dict[str, bool]] = (0.0, {})
        self._task = ray.remote(_on_box)

    def _options(self, box: str) -> Any:
        return self._task.options(label_selector={LABEL: box}, num_cpus=0, max_retries=0)

    def _alive(self) -> dict[str, bool]:
        at, nodes = self._nodes
        if time.monotonic() - at > 1.0:
            nodes = box_nodes()
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def _call(self, box: str, op: str, *args: Any, timeout: float | None = None) -> JsonDict:
        ref = self._options(box).remote(self.calls, op, box, *args)
        ready, _ = self._ray.wait([ref], timeout=timeout or self.call_timeout)
        if not ready:
            self._ray.cancel(ref, force=True)
            raise TimeoutError(f"box {box} did not answer {op} within {timeout or self.call_timeout:.0f} s")
        return self._ray.get(ref)

    def boxes(self, names: list[str] | None = None) -> list[BoxInfo]:
        alive = [n for n, up in sorted(self._alive().items()) if up and (names is None or n in names)]
        out = []
        for name in alive:
            if name not in self._known:
                try:
                    self._known[name] = BoxInfo.from_describe(name, self._call(name, "describe", self.spec))
                except Exception as exc:  # noqa: BLE001 - a box that cannot describe itself is left out, said
                    self.left_out[name] = f"{type(exc).__name__}: {exc}"
                    continue
            out.append(self._known[name])
        return out

    def submit(self, box: str, params: JsonDict, spec: JsonDict) -> str:
        self._n += 1
        handle = f"{box}#{self._n}"
        if self.agent is not None:
            ref = self.agent(box).run_trial.remote(dict(params), dict(spec))
        else:
            ref = self._options(box).remote(self.calls, "trial", box, dict(params), dict(spec))
        self._refs[ref] = (handle, box, dict(params))
        return handle

    def wait(self, timeout: float) -> list[tuple[str, JsonDict]]:
        ray = self._ray
        if not self._refs:
            time.sleep(min(max(timeout, 0.0), 0.05))
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=max(0.0, timeout))
        if ready:  # everything else that is done too
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        out = []
        for ref in ready:
            handle, box, params = self._refs.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the task raised, its worker or node died, or it was cancelled
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                result = failure("crash" if "died" in str(exc).lower() else "error",
                                 f"box {box}: {type(exc).__name__}: {first}"[:500], box, params)
            out.append((handle, result if isinstance(result, dict) else
                        failure("error", f"box {box} answered {type(result).__name__}", box, params)))
        return out

    def cancel(self, handle: str) -> None:
        for ref, (h, _, _) in list(self._refs.items()):
            if h == handle:
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - a dead node's task cannot be cancelled: dropped
                    pass
                del self._refs[ref]

    def available(self, box: str) -> bool:
        return self._alive().get(box, False)

    def verify(self, box: str, candidate: JsonDict, spec: JsonDict) -> JsonDict:
        try:
            rounds = int(spec.get("verify_rounds") or 12)
            return self._call(box, "verify", candidate, spec,
                              timeout=float(spec.get("timeout_s") or 300) * 2 * rounds + 60)
        except Exception as exc:  # noqa: BLE001 - a box that cannot verify does not verify
            return {"significant": False, "message": f"box {box} could not verify: {type(exc).__name__}: {exc}"}

    def apply(self, box: str, changes: JsonDict, reason: str) -> JsonDict:
        try:
            return self._call(box, "apply", changes, reason, timeout=600.0)
        except Exception as exc:  # noqa: BLE001
            return {"ok": False, "message": f"box {box}: the apply did not complete: {type(exc).__name__}: {exc}"}

    def now(self) -> float:
        return time.monotonic()


__all__ = ["DaemonCalls", "RayExecutor", "LABEL", "box_nodes"]
