"""The fleet on a real local Ray cluster: a head and two labelled nodes with fake GPUs (fast health
checks, its own RAY_TMPDIR and HOME, a small object store), a real box agent on each node over a
real `llmos-tui serve` daemon on the demo model, each box with its own home and journal.

One cluster for the module (it takes seconds to start); the node-loss tests run last (the
read-only box's node, once removed, stays in Ray's node table: the head would list it).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from llmos_tui.cli.main import main  # noqa: E402
from llmos_tui.journal import Journal  # noqa: E402
from llmos_tui.serve.once import Once  # noqa: E402

from tests.conftest import wait_for  # noqa: E402

BOXES = ("a", "b")
SERVE_ARGS = ["--listen", "127.0.0.1:0", "--n-ctx", "512", "--n-threads", "1", "--n-threads-batch", "1"]


@pytest.fixture(scope="module")
def local_fleet():
    from llmos_tui.fleet.local import LocalFleet

    fleet = LocalFleet(BOXES, gpus=2)
    try:
        fleet.start()
        fleet.handles = fleet.start_agents(SERVE_ARGS)  # type: ignore[attr-defined]
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def head(local_fleet, tmp_path_factory: pytest.TempPathFactory):
    """The head's view over its own journal."""
    from llmos_tui.fleet.view import Fleet

    path = tmp_path_factory.mktemp("head") / "head.sqlite"
    journal = Journal(path)
    view = Fleet(journal, call_timeout_s=5.0)
    view.path = path  # type: ignore[attr-defined]
    yield view
    journal.close()


def _json(out: str):
    """The JSON document in ``out`` (Ray's driver may print its own log lines around it)."""
    starts = [i for i, line in enumerate(out.splitlines(keepends=True)) if line.startswith(("[", "{"))]
    lines = out.splitlines(keepends=True)
    for start in starts:
        try:
            return json.JSONDecoder().raw_decode("".join(lines[start:]))[0]
        except ValueError:
            continue
    raise AssertionError(f"no JSON in {out!r}")


def _states(view) -> dict[str, str]:
    return {v.box: v.state for v in view.poll()}


def _until_ready(view, box: str, timeout: float = 90.0):
    found: list = []

    def ready() -> bool:
        views = {v.box: v for v in view.poll()}
        found[:] = [views.get(box)]
        return views.get(box) is not None and views[box].alive and views[box].info.get("engine") == "ready"

    assert wait_for(ready, timeout, step=0.3), found
    return found[0]


def test_status_lists_every_box(head, capsys: pytest.CaptureFixture[str]) -> None:
    for box in BOXES:
        view = _until_ready(head, box)
        assert view.ray_gpus == 2.0  # the node's GPUs as Ray accounts them
        assert view.info["model"] and view.info["daemon_pid"] and view.info["journal_path"]
    # the CLI's own words, in this process (its driver is the test's)
    code = main(["fleet", "status", "--json", "--journal", str(head.path)])
    out = _json(capsys.readouterr().out)
    assert code == 0, out
    assert {b["box"]: b["state"] for b in out["boxes"]} == {"a": "alive", "b": "alive"}
    assert all(b["engine"] == "ready" and b["since"] for b in out["boxes"])


def test_apply_goes_through_the_box_transaction_and_is_journaled_at_both_ends(head) -> None:
    box_a = _until_ready(head, "a")
    before_b = _until_ready(head, "b").info["summary"]
    answer = head.change("a", "apply", {"n_ctx": 384}, "fleet test", key=f"t-{uuid.uuid4().hex}")
    assert answer["ok"] and answer["state"] == "applied", answer
    cfg = f"cfg:{answer['config_id']}"
    with Journal(box_a.info["journal_path"], readonly=True, create=False) as box_journal:  # the box's own journal
        shown = box_journal.show(cfg)
        assert shown["params"]["n_ctx"] == 384 and shown["standing"] == "good"
        assert any(e["data"].get("key") == answer["key"] for e in box_journal.events("request_key"))
    head.poll()  # the next round copies the box's new entries to the head
    copied = {e.id: e for _box, e in head.journal.fleet.entries("a", kinds="config", limit=50)}
    assert cfg in copied and "384" in copied[cfg].summary
    assert head.journal.fleet.entries("b", kinds="config", limit=50) is not None
    assert _until_ready(head, "b").info["summary"] == before_b  # the other box is untouched


def test_a_retried_apply_is_applied_once_also_across_an_agent_restart(head, local_fleet) -> None:
    _until_ready(head, "b")
    key = f"retry-{uuid.uuid4().hex}"
    first = head.change("b", "apply", {"n_ctx": 320}, "retry test", key=key)
    assert first["ok"] and first["state"] == "applied", first
    again = head.change("b", "apply", {"n_ctx": 320}, "retry test", key=key)
    assert again.get("replayed") is True and again["config_id"] == first["config_id"]
    # the agent dies and Ray restarts it (a new process): the key is still known (the box's journal)
    old_pid = ray.get(head._handle("b").ping.remote())["pid"]
    ray.kill(head._handle("b"), no_restart=False)
    assert wait_for(lambda: _ping_pid(head, "b") not in (None, old_pid), 60, step=0.3)
    third = head.change("b", "apply", {"n_ctx": 320}, "retry test", key=key)
    assert third.get("replayed") is True and third["config_id"] == first["config_id"]
    with Journal(_until_ready(head, "b").info["journal_path"], readonly=True, create=False) as box_journal:
        applied = [c for c in box_journal.configs(50) if c.params.get("n_ctx") == 320]
        assert len(applied) == 1, [c.id for c in applied]


def _ping_pid(head, box: str):
    try:
        return ray.get(head._handle(box).ping.remote(), timeout=5)["pid"]
    except Exception:  # noqa: BLE001 - restarting
        head._handles.pop(box, None)
        return None


def test_kill_switch_and_the_cli_exit_codes(head, capsys: pytest.CaptureFixture[str]) -> None:
    _until_ready(head, "a")
    on = head.change("a", "kill_switch", True)
    assert on["ok"] and on["kill_switch"] is True, on
    assert _until_ready(head, "a").info["kill_switch"] is True
    off = head.change("a", "kill_switch", False)
    assert off["ok"] and off["kill_switch"] is False, off
    j = ["--journal", str(head.path)]
    assert main(["fleet", "kill-switch", "on", "--all", *j]) == 0
    assert all(v.info["kill_switch"] is True for v in head.poll())
    assert main(["fleet", "kill-switch", "off", "--all", *j]) == 0
    assert main(["fleet", "apply", "a", "n_ctx=lots", *j]) == 1  # the box's transaction refuses it
    assert "n_ctx must be an integer" in capsys.readouterr().out
    assert main(["fleet", "apply", "a", "n_ctx", *j]) == 2  # not key=value: nothing is sent
    assert main(["fleet", "undo", "nosuchbox", "cfg:1", *j]) == 3
    assert main(["fleet", "kill-switch", "on", *j]) == 2  # a box or --all


async def test_f7_fleet_screen_shows_every_box_sorts_and_filters(head) -> None:
    from textual.app import App

    from llmos_tui.ui.fleet_screen import FleetScreen

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(FleetScreen(head.path, interval=0.3))

    app = Host()
    async with app.run_test(size=(140, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, FleetScreen)
        for _ in range(150):
            await pilot.pause(0.1)
            if screen.rounds and {v.box for v in screen.views} >= set(BOXES) and all(v.alive for v in screen.views):
                break
        assert not screen.problem, screen.problem
        table = screen.query_one("#fleet-table")
        assert table.row_count == 2 and {v.state for v in screen.views} == {"alive"}
        await pilot.press("s")
        assert screen.sort == "state"
        await pilot.press("slash")
        await pilot.press("b")
        await pilot.pause(0.2)
        assert [v.box for v in screen.shown_views()] == ["b"] and table.row_count == 1
        details = screen.query_one("#fleet-details").text
        assert "box b: alive" in details and "journal (head's copy):" in details and "cfg:1" in details


def _copied(path: Path, box: str) -> dict[str, dict]:
    """entry_id -> data of what the journal at ``path`` holds of ``box`` (box states left out)."""
    with Journal(path, readonly=True, create=False, check=False) as journal:
        rows = journal.fleet.db.query("SELECT entry_id, data FROM fleet_entries WHERE box = ? AND type != 'box'",
                                      (box,))
    return {r["entry_id"]: json.loads(r["data"] or "null") for r in rows}


def _has_key(path: Path, box: str, key: str) -> bool:
    """The head's copy of ``box`` holds the request_key event of ``key`` (the row's data column)."""
    return any(isinstance(d, dict) and isinstance(d.get("data"), dict) and d["data"].get("key") == key
               for d in _copied(path, box).values())


def test_the_standing_collector_copies_changes_with_no_view_running_and_survives_a_restart(
        head, local_fleet, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    from llmos_tui.fleet.collector import collector_handle, start_collector
    from llmos_tui.journal.fleet import entries_after

    path = tmp_path_factory.mktemp("collector") / "head.sqlite"
    box_a = _until_ready(head, "a")
    first = start_collector(path, interval_s=0.5)
    try:
        assert not first["found"] and first["journal"] == str(path.resolve())
        # a second start finds the running one (and keeps its journal)
        assert main(["fleet", "collect", "--journal", str(path.parent / "other.sqlite")]) == 0
        out = capsys.readouterr()
        assert "found the running collector" in out.out and f"pid {first['pid']}" in out.out
        assert "the running collector writes to" in out.err
        # a change on box a, and nobody polls: the collector copies it
        key = f"collect-{uuid.uuid4().hex}"
        t0 = time.time()
        assert head.change("a", "kill_switch", True, key=key)["ok"]
        assert wait_for(lambda: _has_key(path, "a", key), 10, step=0.1)
        lag = time.time() - t0
        assert lag < 5, lag
        # Ray restarts it (a new process): it carries on from the journal's cursors
        ray.kill(collector_handle(), no_restart=False)
        restarted = lambda: (_collector_pid() or first["pid"]) != first["pid"]  # noqa: E731
        assert wait_for(restarted, 20, step=0.2)
        key2 = f"collect-{uuid.uuid4().hex}"
        assert head.change("a", "kill_switch", False, key=key2)["ok"]
        assert wait_for(lambda: _has_key(path, "a", key2), 10, step=0.1)
        # nothing lost, nothing twice: the head's copy of box a is the box's own journal
        with Journal(box_a.info["journal_path"], readonly=True, create=False, check=False) as box_journal:
            own = {e["id"] for e in entries_after(box_journal, {}, limit=10_000)[0]}
        assert wait_for(lambda: set(_copied(path, "a")) == own, 5, step=0.2), own ^ set(_copied(path, "a"))
        with Journal(path, readonly=True, create=False, check=False) as journal:
            states = {row["box"]: row["state"] for row in journal.fleet.boxes()}
        assert states == {"a": "alive", "b": "alive"}
        assert main(["fleet", "collect", "--status", "--json"]) == 0
        status = _json(capsys.readouterr().out)
        assert status["rounds"] >= 1 and status["journal"] == str(path.resolve()) and not status["last_error"]
    finally:
        assert main(["fleet", "collect", "--stop"]) == 0
    assert "collector stopped" in capsys.readouterr().out
    assert collector_handle() is None
    assert main(["fleet", "collect", "--status"]) == 3
    assert "none runs" in capsys.readouterr().out


def _collector_pid():
    from llmos_tui.fleet.collector import collector_status

    status = collector_status(timeout_s=2)
    return status["pid"] if status else None


def test_a_box_whose_agent_does_not_answer_in_time_is_stale(head) -> None:
    import os
    import signal

    from llmos_tui.fleet.view import Fleet

    _until_ready(head, "b")
    pid = ray.get(head._handle("b").ping.remote(), timeout=10)["pid"]
    view = Fleet(None, call_timeout_s=0.5)  # no journal: the head's states are left alone
    os.kill(pid, signal.SIGSTOP)  # the agent's process is there and does not answer
    try:
        views = {v.box: v for v in view.poll()}
    finally:
        os.kill(pid, signal.SIGCONT)
    assert views["b"].state == "stale" and views["b"].node_alive, views["b"]
    assert "did not answer in 0.5 s" in views["b"].why
    assert views["a"].state == "alive"
    assert wait_for(lambda: {v.box: v.state for v in view.poll()}.get("b") == "alive", 10, step=0.2)


async def test_enter_on_a_box_opens_its_detail_screen_live_and_escape_goes_back(head) -> None:
    from textual.app import App
    from textual.widgets import DataTable

    from llmos_tui.ui.fleet_screen import BoxScreen, FleetScreen

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(FleetScreen(head.path, interval=0.3))

    app = Host()
    async with app.run_test(size=(140, 40)) as pilot:
        fleet_screen = app.screen
        assert isinstance(fleet_screen, FleetScreen)
        for _ in range(100):
            await pilot.pause(0.1)
            if {v.box for v in fleet_screen.views if v.alive} >= set(BOXES):
                break
        table = fleet_screen.query_one("#fleet-table", DataTable)
        table.move_cursor(row=[v.box for v in fleet_screen.shown_views()].index("a"))
        await pilot.press("enter")
        await pilot.pause(0.1)
        box_screen = app.screen
        assert isinstance(box_screen, BoxScreen) and box_screen.box == "a"
        drawn = box_screen.shown_round
        for _ in range(50):  # the fleet screen goes on polling under it, and it is redrawn
            await pilot.pause(0.1)
            if box_screen.shown_round >= drawn + 2:
                break
        assert box_screen.shown_round >= drawn + 2
        text = box_screen.query_one("#box-body").text
        assert "box a: alive" in text and "engine   ready" in text, text
        assert "n_ctx = " in text and "open findings" in text and "journal (head's copy" in text
        assert "cfg:1" in text, text
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert app.screen is fleet_screen


def test_box_lines_show_findings_with_their_narration() -> None:
    from llmos_tui.fleet.view import BoxView
    from llmos_tui.ui.fleet_screen import box_lines

    now = time.time()
    view = BoxView("gpu7", "stale", now - 30, "its daemon does not answer", True, 2.0,
                   {"engine": "ready", "model": "m.gguf", "params": {"n_ctx": 4096, "n_gpu_layers": 99},
                    "findings": [{"id": 3, "severity": "warning", "title": "decode slowed", "detector": "tps",
                                  "narration": "tok/s fell 40 % after cfg:5", "narration_kind": "likely",
                                  "repairs": ["undo cfg:5"]}]}, now - 60)
    text = "\n".join(box_lines(view, None, "gpu7", now))
    assert "box gpu7: stale" in text and "its daemon does not answer" in text
    assert "n_ctx = 4096" in text and "#3 [warning] decode slowed" in text
    assert "tok/s fell 40 % after cfg:5 (likely)" in text and "repairs: undo cfg:5" in text


def test_a_removed_box_shows_unavailable_and_comes_back_when_its_node_rejoins(head, local_fleet,
                                                                               capsys: pytest.CaptureFixture[str]
                                                                               ) -> None:
    daemon_pid = _until_ready(head, "b").info["daemon_pid"]
    capsys.readouterr()
    local_fleet.remove_box("b")
    removed = time.time()
    assert wait_for(lambda: _states(head).get("b") == "unavailable", 20, step=0.2), _states(head)
    assert time.time() - removed < 10
    assert _states(head)["a"] == "alive"
    # its history is still at the head while it is down
    assert main(["journal", "--journal", str(head.path), "list", "--box", "b", "--json"]) == 0
    listed = _json(capsys.readouterr().out)
    assert any(e["type"] == "config" for e in listed) and any(e["kind"] == "unavailable" for e in listed)
    assert main(["fleet", "status", "--journal", str(head.path)]) == 3  # not every box is alive
    assert "unavailable" in capsys.readouterr().out
    t0 = time.time()
    assert main(["fleet", "apply", "b", "n_ctx=512", "--journal", str(head.path)]) == 3  # at once, not a hang
    assert time.time() - t0 < 10
    local_fleet.add_box("b")  # a node with the same label: Ray restarts the agent there
    back = _until_ready(head, "b", timeout=60)
    assert back.state == "alive"
    assert back.info["daemon_pid"] == daemon_pid  # the box's daemon kept running while its node was gone


def test_idempotency_keys_without_ray(tmp_path: Path) -> None:
    """serve/once.py on its own: a key runs once, a busy answer is not kept, the journal keeps it."""
    runs = []

    def run():
        runs.append(1)
        return {"ok": True, "state": "applied", "config_id": None}, 200

    with Journal(tmp_path / "j.sqlite") as journal:
        once = Once(journal)
        assert once.run("k1", "apply", run) == ({"ok": True, "state": "applied", "config_id": None}, 200)
        body, status = once.run("k1", "apply", run)
        assert body["replayed"] is True and status == 200 and len(runs) == 1
        assert once.run("k1", "undo", run)[1] == 409  # a key names one request
        assert Once(journal).run("k1", "apply", run)[0]["replayed"] is True  # a new process: from the journal
        busy = lambda: ({"ok": False, "details": {"busy": True}}, 409)  # noqa: E731
        once.run("k2", "apply", busy)
        assert once.run("k2", "apply", run)[1] == 200 and len(runs) == 2
    assert Once.check_key("") and Once.check_key(5) and Once.check_key(None) is None


def test_fleet_journal_cursors_survive_a_head_restart(tmp_path: Path) -> None:
    from llmos_tui.journal.fleet import entries_after

    with Journal(tmp_path / "box.sqlite") as box:
        for n in range(3):
            box.record_event("loaded", {"n": n})
        with Journal(tmp_path / "head.sqlite") as head:
            entries, cursors, more = entries_after(box, head.fleet.cursors("x"))
            assert len(entries) == 3 and not more
            assert head.fleet.store("x", entries, cursors) == 3
        box.record_event("crashed", {"n": 3})
        with Journal(tmp_path / "head.sqlite") as head:  # the head restarted: it asks from its cursor
            entries, cursors, _more = entries_after(box, head.fleet.cursors("x"))
            assert [e["kind"] for e in entries] == ["crashed"]
            assert head.fleet.store("x", entries, cursors) == 1
            assert head.fleet.store("x", entries, cursors) == 0  # a repeat is harmless
            assert len(head.fleet.entries("x", kinds="event")) == 4


def test_a_box_whose_agent_is_gone_is_dead_and_a_new_agent_wraps_its_running_daemon(head, local_fleet) -> None:
    from llmos_tui.fleet.agent import start_agent

    daemon_pid = _until_ready(head, "a").info["daemon_pid"]
    ray.kill(head._handle("a"), no_restart=True)
    head._handles.pop("a", None)
    assert wait_for(lambda: _states(head).get("a") == "dead", 20, step=0.2), _states(head)
    snap = start_agent("a", env=local_fleet.agent_env("a"), serve_args=SERVE_ARGS)  # as `fleet up --no-join`
    assert snap["daemon"] and snap["daemon_pid"] == daemon_pid  # found, not started again
    assert _until_ready(head, "a").state == "alive"


def test_a_read_only_box_refuses_a_change_over_ray(local_fleet, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import signal

    from llmos_tui.fleet import NAMESPACE, agent_name
    from llmos_tui.fleet.agent import start_agent

    local_fleet.add_box("ro")
    local_fleet.home("ro").mkdir(parents=True, exist_ok=True)
    snap = {}
    try:
        snap = start_agent("ro", env=local_fleet.agent_env("ro"), serve_args=[*SERVE_ARGS, "--readonly"])
        assert snap["daemon"] and snap["readonly"] is True, snap
        local_fleet.daemon_pids.add(snap["daemon_pid"])
        capsys.readouterr()
        code = main(["fleet", "apply", "ro", "n_ctx=384", "--journal", str(tmp_path / "head.sqlite")])
        out = capsys.readouterr().out
        assert code == 1, out
        assert out.strip() == "ro: read-only mode: configuration changes are disabled", out
        with Journal(snap["journal_path"], readonly=True, create=False, check=False) as box_journal:
            assert not [c for c in box_journal.configs(50) if c.params.get("n_ctx") == 384]
    finally:
        try:
            ray.kill(ray.get_actor(agent_name("ro"), namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass
        local_fleet.remove_box("ro")
        if snap.get("daemon_pid"):
            os.kill(snap["daemon_pid"], signal.SIGTERM)
