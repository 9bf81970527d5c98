"""A fleet on one machine: a Ray head and N labelled nodes (simulated boxes with fake GPUs), for
the tests, the benchmark and a first try. Each box gets its own LLMOS_TUI_HOME (its own daemon,
journal and control socket), as a real box has its own disk.

Everything it starts it stops by itself (``Cluster.shutdown`` ends the processes of this cluster
only; the boxes' daemons by their pids): never `ray stop`, which ends every Ray process of the
machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from llmos_tui.fleet import LABEL, refresh_ray_auth

# Ray's fast failure detection (a dead node is seen in 2-3 s instead of 15-19 s)
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
OBJECT_STORE = 80 * 1024 * 1024


class LocalFleet:
    """``with LocalFleet(["a", "b"]) as fleet: ...``: the head, one node per box (``gpus`` fake
    GPUs each), a driver connected; :meth:`start_agents` puts an agent (and a daemon) on each."""

    def __init__(self, boxes: Sequence[str], *, gpus: int = 2, root: str | None = None,
                 health: dict[str, int] | None = None) -> None:
        self.boxes = list(boxes)
        self.gpus = gpus
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="llmos-fleet-", dir="/tmp"))
        self.health = dict(FAST_HEALTH if health is None else health)
        self.cluster: Any = None
        self.nodes: dict[str, Any] = {}
        self.daemon_pids: set[int] = set()
        self._env_before: dict[str, str | None] = {}

    def home(self, box: str) -> Path:
        return self.root / "boxes" / box

    def start(self) -> "LocalFleet":
        import ray
        from ray.cluster_utils import Cluster

        # Ray's own folders (sessions, the auth token under ~/.ray) stay inside this fleet's folder,
        # and token authentication is on, as on a real fleet (a token of this fleet only)
        for name, value in (("RAY_TMPDIR", str(self.root / "ray")), ("HOME", str(self.root / "home")),
                            ("RAY_AUTH_MODE", "token")):
            self._env_before[name] = os.environ.get(name)
            if name != "RAY_AUTH_MODE":
                Path(value).mkdir(parents=True, exist_ok=True)
            os.environ[name] = value
        token = self.root / "home" / ".ray" / "auth_token"
        token.parent.mkdir(mode=0o700, exist_ok=True)
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        refresh_ray_auth()  # this process may have imported Ray before (its mode is cached)
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": OBJECT_STORE, "_system_config": self.health})
        for box in self.boxes:
            self.add_box(box)
        ray.init(address=self.cluster.address, namespace="llmos", log_to_driver=False)
        return self

    def add_box(self, box: str) -> Any:
        """(Re)join a node labelled ``box``: a restarted box."""
        node = self.cluster.add_node(num_cpus=1, num_gpus=self.gpus, labels={LABEL: box},
                                     object_store_memory=OBJECT_STORE)
        self.nodes[box] = node
        return node

    def remove_box(self, box: str) -> None:
        """The box's node goes away (its raylet and workers are killed; its daemon stays up, as on a
        box that dropped off the network)."""
        self.cluster.remove_node(self.nodes.pop(box), allow_graceful=False)

    def agent_env(self, box: str) -> dict[str, str]:
        from llmos_tui.fleet.agent import ENGINE_ENV

        env = {k: os.environ[k] for k in ENGINE_ENV if k in os.environ and k != "LLMOS_TUI_HOME"}
        env["LLMOS_TUI_HOME"] = str(self.home(box))
        return env

    def start_agents(self, serve_args: Sequence[str] = (), timeout_s: float = 180.0) -> dict[str, Any]:
        """An agent on each box; each starts its box's daemon (``llmos-tui serve serve_args``)."""
        import ray

        from llmos_tui.fleet.agent import agent_options, remote_agent

        handles = {}
        for box in self.boxes:
            self.home(box).mkdir(parents=True, exist_ok=True)
            handles[box] = remote_agent().options(**agent_options(box)).remote(
                box, env=self.agent_env(box), serve_args=list(serve_args))
        snaps = ray.get([h.snapshot.remote() for h in handles.values()], timeout=timeout_s)
        for snap in snaps:
            if isinstance(snap.get("daemon_pid"), int):
                self.daemon_pids.add(snap["daemon_pid"])
        return handles

    def stop(self) -> None:
        import ray

        from llmos_tui.serve.client import find_daemons
        from llmos_tui.serve.control import PREFIX, SUFFIX

        for box in self.boxes:  # also a daemon an agent started again later
            for path in find_daemons(self.home(box) / "run"):
                self.daemon_pids.add(int(path.name[len(PREFIX):-len(SUFFIX)]))
        for pid in self.daemon_pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        t0 = time.time()
        deadline = t0 + 15
        from llmos_tui.core.endpoint import process_running

        for pid in self.daemon_pids:
            while time.time() < deadline:
                if not process_running(pid):
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.daemons_stop_s = time.time() - t0
        t0 = time.time()
        if ray.is_initialized():
            ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
        self.shutdown_s = time.time() - t0
        for name, value in self._env_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        refresh_ray_auth()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalFleet":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

