"""The box agent: one Ray actor per GPU box, over that box's own daemon (`llmos-tui serve`).

The agent holds no state of its own that matters: the box's daemon runs the engine, the doctor,
the journal and the change transaction; the agent reaches it by its owner-only control socket
(:class:`~llmos_tui.serve.client.DaemonClient`) and starts one when none runs. So

- every change that comes over Ray (apply, undo, restart, kill switch) is the box's own change:
  vetted, journaled, verified and rolled back by the box's transaction, under the box's read-only
  mode and doctor policy (a read-only box refuses it exactly as it refuses its own operator);
- each change carries an idempotency key that the daemon journals with its result: a retried
  call (the caller timed out, or Ray restarted the agent and ran the call again) is answered with
  the first result and applied once, across agent and daemon restarts;
- the daemon is started in its own session: it outlives the agent, and a box cut off from the
  cluster keeps serving and healing itself by its own doctor; a restarted agent finds it again.

Placement (:func:`agent_options`): by the node label ``llmos/box=<name>`` (an actor pinned by node
id never comes back once its node restarts: a restarted raylet is a new node), ``max_restarts=-1``
(it comes back whenever a node with its label joins), no CPU reserved, threaded (a long change
does not hold up a snapshot), detached and named ``llmos-box-<name>`` in the ``llmos`` namespace.

The agent class is plain Python (it runs without Ray in a test); :func:`remote_agent` is the Ray
actor class.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from llmos_tui.core.endpoint import process_running
from llmos_tui.errors import LlmosError
from llmos_tui.fleet import LABEL, NAMESPACE, agent_name

if TYPE_CHECKING:
    from llmos_tui.journal.store import Journal
    from llmos_tui.serve.client import DaemonClient

Json = Any

SNAPSHOT_TIMEOUT_S = 3.0  # a daemon that does not answer a snapshot in this time is "not answering"
CHANGE_TIMEOUT_S = 600.0  # a change reloads and verifies the engine (and may roll back)
DAEMON_START_S = 60.0
RESTART_DAEMON_EVERY_S = 30.0  # at most one daemon start this often
# what the box's shell had for these is what its daemon gets (Ray sets its own in a worker)
ENGINE_ENV = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "LLMOS_TUI_HOME", "XDG_RUNTIME_DIR", "PATH", "HOME")
CHANGES = ("apply", "undo", "restart", "kill_switch")


class BoxAgent:
    """The box's agent. ``home``: the box's LLMOS_TUI_HOME (None: the user's folders); ``env``:
    the box shell's values of :data:`ENGINE_ENV` (a missing name is unset for the daemon);
    ``serve_args``: arguments of the `llmos-tui serve` it starts when none runs."""

    def __init__(self, box: str, *, env: Mapping[str, str] | None = None, serve_args: Sequence[str] = (),
                 start_daemon: bool = True, daemon_start_s: float = DAEMON_START_S) -> None:
        self.box = box
        self.env = dict(env) if env is not None else {k: os.environ[k] for k in ENGINE_ENV if k in os.environ}
        for name in ("LLMOS_TUI_HOME", "XDG_RUNTIME_DIR"):  # where this box's daemon and journal live
            if name in self.env:
                os.environ[name] = self.env[name]
            else:
                os.environ.pop(name, None)
        self.serve_args = list(serve_args)
        self.start_daemon = start_daemon
        self.daemon_start_s = daemon_start_s
        self.started = time.time()
        self._lock = threading.RLock()
        self._fast: DaemonClient | None = None
        self._slow: DaemonClient | None = None
        self.daemon_started: int | None = None  # the pid of a daemon this agent started
        self._last_start = 0.0
        self._journal: Journal | None = None
        self._journal_path: str | None = None
        self.problem = ""
        self._connect()

    # ---- the daemon ------------------------------------------------------------------------
    @property
    def runtime_dir(self) -> Path:
        from llmos_tui.paths import default_paths

        return default_paths().runtime_dir

    def _connect(self) -> bool:
        """Find this box's daemon (or start one); True when one answers."""
        from llmos_tui.serve.client import DaemonClient, find_daemons

        with self._lock:
            for path in find_daemons(self.runtime_dir):
                client = DaemonClient(path, timeout=SNAPSHOT_TIMEOUT_S)
                try:
                    client.snapshot()
                except LlmosError:
                    client.close()
                    continue
                self._close_clients()
                self._fast, self._slow = client, DaemonClient(path, timeout=CHANGE_TIMEOUT_S)
                self.problem = ""
                return True
            if self.start_daemon and time.time() - self._last_start >= RESTART_DAEMON_EVERY_S:
                return self._start_daemon()
            self.problem = self.problem or f"no llmos-tui daemon runs on box {self.box}"
            return False

    def _start_daemon(self) -> bool:
        from llmos_tui.paths import default_paths
        from llmos_tui.serve.client import DaemonClient
        from llmos_tui.serve.control import socket_path

        self._last_start = time.time()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in ENGINE_ENV}
        env.update(self.env)
        state = default_paths().state_dir
        state.mkdir(parents=True, exist_ok=True)
        log_path = state / "fleet-serve.log"
        # Started by a short-lived launcher, so the daemon is not a child of this worker: Ray kills a
        # worker's children when the worker ends (its node lost, the agent restarted), and the
        # daemon must outlive both (the box keeps serving and healing itself)
        launched = subprocess.run([sys.executable, "-c", _LAUNCHER, str(log_path), sys.executable, "-m",
                                   "llmos_tui.cli", "serve", *self.serve_args],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=30)
        try:
            pid = int(launched.stdout.strip())
        except ValueError:
            self.problem = f"the daemon did not start: {(launched.stderr or launched.stdout).strip()[-300:]}"
            return False
        self.daemon_started = pid
        path = socket_path(self.runtime_dir, pid)
        deadline = time.time() + self.daemon_start_s
        while time.time() < deadline:
            if not process_running(pid):
                self.problem = f"the daemon this agent started (pid {pid}) exited (see {log_path})"
                return False
            if path.exists():
                client = DaemonClient(path, timeout=SNAPSHOT_TIMEOUT_S)
                try:
                    client.snapshot()
                except LlmosError:
                    client.close()
                else:
                    self._close_clients()
                    self._fast, self._slow = client, DaemonClient(path, timeout=CHANGE_TIMEOUT_S)
                    self.problem = ""
                    return True
            time.sleep(0.2)
        self.problem = f"the daemon this agent started did not answer in {self.daemon_start_s:g} s (see {log_path})"
        return False

    def _close_clients(self) -> None:
        for client in (self._fast, self._slow):
            if client is not None:
                client.close()
        self._fast = self._slow = None

    def _client(self, slow: bool = False) -> "DaemonClient":
        if self._fast is None and not self._connect():
            raise LlmosError(self.problem)
        client = self._slow if slow else self._fast
        assert client is not None
        return client

    def _daemon_snapshot(self) -> dict[str, Json]:
        try:
            return self._client().snapshot()
        except LlmosError:
            with self._lock:
                self._close_clients()
            return self._client().snapshot()  # found again, or started again (raises when not)

    # ---- what the head reads ----------------------------------------------------------------
    def ping(self) -> dict[str, Json]:
        return {"box": self.box, "pid": os.getpid(), "started": self.started}

    def snapshot(self) -> dict[str, Json]:
        """The box in brief: daemon answering, engine state, model, tok/s, open findings, last
        change, GPUs (``daemon: False`` and ``error`` when its daemon does not answer)."""
        now = time.time()
        try:
            snap = self._daemon_snapshot()
        except LlmosError as exc:
            return {"box": self.box, "ts": now, "daemon": False, "error": str(exc), "agent_pid": os.getpid()}
        out = summarize(snap)
        journal = snap.get("journal")
        if isinstance(journal, dict) and isinstance(journal.get("path"), str):
            self._journal_path = journal["path"]
        out.update({"box": self.box, "ts": now, "daemon": True, "error": None, "agent_pid": os.getpid()})
        return out

    def findings(self) -> list[dict[str, Json]]:
        snap = self._daemon_snapshot()
        doctor = snap.get("doctor")
        return list(doctor.get("open") or []) if isinstance(doctor, dict) else []

    def journal_since(self, cursors: Mapping[str, int], limit: int = 500) -> dict[str, Json]:
        """This box's journal entries after ``cursors`` (read-only: the daemon owns the journal)."""
        from llmos_tui.journal.fleet import entries_after

        journal = self._open_journal()
        entries, after, more = entries_after(journal, cursors, limit)
        return {"box": self.box, "entries": entries, "cursors": after, "more": more}

    def poll(self, cursors: Mapping[str, int] | None = None, limit: int = 500) -> dict[str, Json]:
        """One round trip for the head's view: the snapshot, and the journal after ``cursors``
        (None: no journal)."""
        out = self.snapshot()
        if cursors is not None and out.get("daemon"):
            try:
                out["journal"] = self.journal_since(cursors, limit)
            except Exception as exc:  # noqa: BLE001 - the view still gets the snapshot
                out["journal_error"] = f"{type(exc).__name__}: {exc}"
        return out

    def _open_journal(self) -> "Journal":
        from llmos_tui.journal import Journal

        with self._lock:
            path = self._journal_path
            if path is None:
                self.snapshot()
                path = self._journal_path
            if path is None:
                raise LlmosError(f"box {self.box}'s daemon runs without a journal")
            if self._journal is None or str(self._journal.path) != str(Path(path).expanduser()):
                if self._journal is not None:
                    self._journal.close()
                self._journal = Journal(path, readonly=True, create=False, check=False,
                                        telemetry_retention_days=None)
            return self._journal

    # ---- changes, forwarded to the box's own change transaction ------------------------------
    def change(self, verb: str, body: Mapping[str, Json], key: str) -> dict[str, Json]:
        """``apply`` / ``undo`` / ``restart`` / ``kill_switch`` on this box, once per ``key``."""
        if verb not in CHANGES:
            raise LlmosError(f"unknown change {verb!r}: {', '.join(CHANGES)}")
        if not key:
            raise LlmosError("a change over the fleet needs an idempotency key")
        try:
            client = self._client(slow=True)
            answer = client.change(verb, dict(body), idempotency_key=key)
        except LlmosError:
            with self._lock:
                self._close_clients()
            answer = self._client(slow=True).change(verb, dict(body), idempotency_key=key)  # same key: once
        answer.setdefault("box", self.box)
        return answer

    def apply(self, changes: Mapping[str, Json], reason: str = "", *, key: str) -> dict[str, Json]:
        return self.change("apply", {"changes": dict(changes), "reason": reason or "fleet"}, key)

    def undo(self, entry: str, *, key: str) -> dict[str, Json]:
        return self.change("undo", {"entry": entry}, key)

    def restart(self, reason: str = "", *, key: str) -> dict[str, Json]:
        return self.change("restart", {"reason": reason or "fleet"}, key)

    def kill_switch(self, on: bool, *, key: str) -> dict[str, Json]:
        return self.change("kill_switch", {"on": bool(on)}, key)

    # ---- distributed tuning -----------------------------------------------------------------
    def run_trial(self, params: dict[str, Json], spec: dict[str, Json]) -> dict[str, Json]:
        """One trial of a fleet study on this box (``llmos_tui.fleet.trials.run_box_trial``)."""
        try:
            from llmos_tui.fleet.trials import run_box_trial  # type: ignore[import-not-found,unused-ignore]
        except ModuleNotFoundError as exc:
            if exc.name != "llmos_tui.fleet.trials":
                raise
            raise LlmosError("distributed tuning is not available in this llmos-tui: "
                             "llmos_tui.fleet.trials (run_box_trial) is missing") from None
        return run_box_trial(self._client(slow=True), params, spec)  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            self._close_clients()
            if self._journal is not None:
                self._journal.close()
                self._journal = None


_LAUNCHER = """
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
print(p.pid)
"""


def summarize(snap: Mapping[str, Json]) -> dict[str, Json]:
    """A daemon snapshot in the fleet view's words."""
    engine = snap.get("engine") if isinstance(snap.get("engine"), dict) else {}
    doctor = snap.get("doctor") if isinstance(snap.get("doctor"), dict) else None
    telemetry = snap.get("telemetry") if isinstance(snap.get("telemetry"), dict) else {}
    journal = snap.get("journal") if isinstance(snap.get("journal"), dict) else {}
    change = snap.get("last_change") if isinstance(snap.get("last_change"), dict) else None
    tps = engine.get("rolling_gen_tps") or engine.get("last_gen_tps")
    gpus = [{"index": g.get("index"), "name": g.get("name"), "uuid": g.get("uuid"), "util": g.get("util_gpu"),
             "mem_used": g.get("mem_used"), "mem_total": g.get("mem_total")}
            for g in (telemetry.get("gpus") or []) if isinstance(g, dict)]
    model_path = str(engine.get("model_path") or "")
    findings = [{"id": f.get("id"), "detector": f.get("detector"), "severity": f.get("severity"),
                 "title": f.get("title"), "ts": f.get("ts"), "narration": f.get("narration") or "",
                 "narration_kind": f.get("narration_kind") or "", "repairs": list(f.get("repairs") or [])[:4]}
                for f in ((doctor or {}).get("open") or []) if isinstance(f, dict)]
    return {
        "engine": engine.get("state"), "model": engine.get("model") or Path(model_path).name,
        "model_path": model_path, "summary": engine.get("summary"), "tok_s": tps,
        "params": dict(engine["params"]) if isinstance(engine.get("params"), dict) else {},
        "findings": findings, "kill_switch": (doctor or {}).get("kill_switch"), "doctor": doctor is not None,
        "readonly": bool(snap.get("readonly")), "gpus": gpus, "daemon_pid": snap.get("pid"),
        "active_config": journal.get("active_config"), "journal_path": journal.get("path"),
        "last_change": ({"state": change.get("state"), "message": change.get("message"),
                         "config_id": change.get("config_id")} if change else None),
        "serve": snap.get("serve"),
    }


def agent_options(box: str, *, detached: bool = True) -> dict[str, Any]:
    """The Ray actor options of ``box``'s agent (see the module's docstring)."""
    options: dict[str, Any] = {
        "name": agent_name(box), "namespace": NAMESPACE, "label_selector": {LABEL: box},
        "max_restarts": -1, "max_task_retries": -1, "num_cpus": 0, "max_concurrency": 16,
        "get_if_exists": True,
    }
    if detached:
        options["lifetime"] = "detached"
    return options


_REMOTE: Any = None


def remote_agent() -> Any:
    """The Ray actor class of :class:`BoxAgent` (imports Ray)."""
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = ray.remote(BoxAgent)
    return _REMOTE


def start_agent(box: str, *, env: Mapping[str, str] | None = None, serve_args: Sequence[str] = (),
                start_daemon: bool = True, detached: bool = True, timeout_s: float = 120.0) -> Any:
    """Create (or find) ``box``'s agent on the node labelled with it and wait until it answers;
    returns its snapshot (:meth:`BoxAgent.snapshot`). Needs a connected Ray driver."""
    import ray

    env = dict(env) if env is not None else {k: os.environ[k] for k in ENGINE_ENV if k in os.environ}
    handle = remote_agent().options(**agent_options(box, detached=detached)).remote(
        box, env=env, serve_args=list(serve_args), start_daemon=start_daemon)
    try:
        return ray.get(handle.snapshot.remote(), timeout=timeout_s)  # type: ignore[no-any-return]
    except ray.exceptions.GetTimeoutError:
        raise LlmosError(f"the agent of box {box} did not answer in {timeout_s:g} s: is a node labelled "
                         f"{LABEL}={box} in the cluster?") from None
