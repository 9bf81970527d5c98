"""The cockpit attached to a running daemon: the TUI (Textual's pilot) and `llmos-tui chat --attach`
as faces of one real daemon (the demo model on llama.cpp), started once for this module.

What is asserted: the attached TUI shows the daemon's engine and streams a reply from the daemon's
queue; a `/params` change through the attached console drains the API reply in flight, applies
and is journaled by the daemon; a read-only attach refuses a change with one clear line; the
doctor, telemetry and the verbs work over the socket; quitting a face leaves the daemon serving.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from llmos_tui.config import load_config
from llmos_tui.engine.supervisor import EngineState
from llmos_tui.journal import Journal
from llmos_tui.serve.attached import AttachedOperator
from llmos_tui.serve.daemon import Daemon
from llmos_tui.serve.settings import ServeSettings
from llmos_tui.serve.sockets import attach_face
from tests.conftest import cli_env, running_daemon, wait_for

CLI = [sys.executable, "-m", "llmos_tui.cli"]
N_CTX = 1024


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    """One daemon (doctor on, telemetry on) on its own home; every test attaches to it."""
    # drain_s: a change waits this long for the reply in flight (generous: a loaded 2-core box)
    settings = ServeSettings(listen="127.0.0.1:0", queue_size=4, wait_s=60, drain_s=60)
    with running_daemon(tmp_path_factory.mktemp("attach-home"), {"n_ctx": N_CTX, "n_threads": 2, "n_threads_batch": 2},
                        settings, name="attach-daemon") as d:
        yield d


def face_config(**overrides):
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, **overrides})
    config.chat.max_tokens = 48  # short replies: the tests are about the path, not the text
    return config


def healthy(daemon: Daemon) -> bool:
    return httpx.get(daemon.url + "/health", timeout=10).json()["status"] == "ok"


def console(daemon: Daemon, *args: str, stdin: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(), "LLMOS_TUI_HOME": str(daemon.home)}  # type: ignore[attr-defined]
    return subprocess.run([*CLI, *args, "chat", "--attach", str(daemon.control_path)], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=env)


async def test_the_attached_tui_shows_the_daemons_engine_and_streams_a_reply_from_its_queue(daemon: Daemon) -> None:
    from textual.widgets import Input

    from llmos_tui.ui.app import LlmosApp
    from llmos_tui.ui.chat_screen import ReplyView
    from llmos_tui.ui.status import EngineStatus
    from tests.pilot import wait_for as pilot_wait

    assert daemon.control_path is not None
    op = AttachedOperator(daemon.control_path, face_config(), face="tui")
    served = daemon.gate.stats().served
    app = LlmosApp(op, start_screen="chat")  # type: ignore[arg-type]
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            status = app.screen.query_one(EngineStatus)
            await pilot_wait(pilot, lambda: "READY" in str(status.render()))
            shown = str(status.render())
            assert "llmos demo" in shown and f"DAEMON pid {os.getpid()}" in shown, shown
            assert f"ctx={N_CTX}" in shown or f"/{N_CTX}" in shown, shown  # the daemon's parameters
            app.screen.query_one("#prompt", Input).value = "What is VRAM?"
            await pilot.press("enter")
            await pilot_wait(pilot, lambda: app.screen.reply is not None and app.screen.reply.finished)
            await pilot.pause(0.3)
            reply = app.screen.reply
            assert reply.status == "done" and len(reply.text.split()) >= 3, (reply.status, reply.error, reply.text)
            assert daemon.gate.stats().served == served + 1  # it went through the daemon's queue
            footer = str(app.screen.query(ReplyView).last().footer_line.render())
            assert "gen tok" in footer and "TTFT" in footer, footer
            # the dashboard mirrors the daemon's telemetry samples (the events stream)
            await pilot_wait(pilot, lambda: op.sampler is not None and op.sampler.latest is not None)
    finally:
        op.close()
    assert healthy(daemon)  # quitting the face left the daemon serving
    assert daemon.operator.supervisor.state == EngineState.READY


def test_params_through_the_attached_console_drains_applies_and_the_daemons_journal_holds_it(
        daemon: Daemon) -> None:
    daemon.operator.supervisor.inject("slow", ms=40)  # an API reply in flight for ~1 s (more under load)
    inflight: list[httpx.Response] = []

    def api_client() -> None:
        body = {"messages": [{"role": "user", "content": "What is VRAM?"}], "max_tokens": 24}
        inflight.append(httpx.post(daemon.url + "/v1/chat/completions", json=body, timeout=60))

    client = threading.Thread(target=api_client)
    client.start()
    try:
        assert wait_for(lambda: daemon.gate.stats().in_flight == 1, 10)
        done = console(daemon, stdin="/params n_ctx=768\nWhat is VRAM?\n")
    finally:
        client.join(60)
        daemon.operator.supervisor.inject("slow", ms=0)
    assert done.returncode == 0, done.stderr
    match = re.search(r"applied \(cfg:(\d+)\): .*ctx=768", done.stdout)
    assert match, done.stdout
    assert len(done.stdout.strip().splitlines()[-1].split()) >= 2  # then a reply, from the daemon's queue
    # drained: the API reply in flight finished whole before the engine reloaded
    assert inflight and inflight[0].status_code == 200, inflight[0].text if inflight else "no reply"
    assert inflight[0].json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert daemon.operator.supervisor.params.n_ctx == 768
    daemon.operator.journal_writer.flush(5)
    journal = Journal(daemon.operator.config.journal_file, readonly=True)
    try:
        entry = journal.show(f"cfg:{match.group(1)}")
    finally:
        journal.close()
    assert "768" in str(entry), entry
    assert healthy(daemon)  # the console quit at the end of its input: the daemon serves on


def test_a_readonly_attach_refuses_a_change_with_a_clear_line(daemon: Daemon) -> None:
    n_ctx = daemon.operator.supervisor.params.n_ctx
    refused = console(daemon, "--readonly", stdin="/params n_ctx=512\n")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == \
        "llmos-tui: error: read-only mode: /params is disabled (it would change the engine)", refused.stderr
    # below the faces' command table too: the attached operator's client refuses every changing verb
    assert daemon.control_path is not None
    op = AttachedOperator(daemon.control_path, face_config(), face="script", readonly=True)
    try:
        result = op.apply({"n_ctx": 512}, reason="test")
        assert result.state == "refused" and "read-only attach: apply is disabled" in result.message
        assert "read-only attach" in (op.restart_engine() or "")
        assert op.doctor is not None and "read-only attach" in (op.doctor.accept(1) or "")
    finally:
        op.close()
    assert daemon.operator.supervisor.params.n_ctx == n_ctx


def test_verbs_doctor_and_telemetry_over_the_socket_and_discovery_by_journal(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    assert daemon.control_path is not None
    monkeypatch.setenv("LLMOS_TUI_HOME", str(daemon.home))  # type: ignore[attr-defined]  # the same box and user
    found = attach_face(face_config(journal=str(daemon.operator.config.journal_file)), None, face="script")
    assert found is not None and found.socket == daemon.control_path
    assert found.supervisor.model_info is not None and found.supervisor.model_info.is_demo
    changes: list = []
    unsubscribe = found.subscribe(changes=changes.append)
    try:
        assert found.doctor is not None
        found.doctor.kill_switch = True
        assert daemon.operator.doctor.kill_switch and found.doctor.kill_switch
        found.doctor.kill_switch = False
        assert not daemon.operator.doctor.kill_switch
        assert isinstance(found.doctor.findings(), list)
        assert found.reset_start_limit()
        assert "shadow" in found.set_adapt_mode("shadow")
        assert found.set_adapt_mode("off")
        before = daemon.operator.supervisor.params.n_ctx
        result = found.apply({"n_ctx": before - 128}, reason="test: attached operator")
        assert result.ok and result.config_id, result
        assert wait_for(lambda: any(c.state == "applied" for c in changes), 10)  # the change event came
        undone = found.undo(f"cfg:{result.config_id}")
        assert undone.ok and daemon.operator.supervisor.params.n_ctx == before, undone
        assert wait_for(lambda: found.sampler.latest is not None, 10)  # the daemon's samples, mirrored
    finally:
        unsubscribe()
        found.close()
    elsewhere = attach_face(face_config(journal=str(Path(daemon.home) / "other.sqlite")), None, face="script")  # type: ignore[attr-defined]
    assert elsewhere is None  # a daemon on another journal is not this cockpit's
    assert healthy(daemon)


def test_status_shows_the_daemons_engine_and_serve_numbers(daemon: Daemon) -> None:
    env = {**cli_env(), "LLMOS_TUI_HOME": str(daemon.home)}  # type: ignore[attr-defined]
    out = subprocess.run([*CLI, "status"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert f"llmos-tui pid {os.getpid()} (serve" in out.stdout and "model llmos demo" in out.stdout, out.stdout
    assert f"serving {daemon.url}" in out.stdout and "requests served" in out.stdout, out.stdout
    assert "did not answer" not in out.stdout, out.stdout


def test_the_standalone_exporter_relays_the_daemons_engine_and_requests(daemon: Daemon) -> None:
    env = {**cli_env(), "LLMOS_TUI_HOME": str(daemon.home)}  # type: ignore[attr-defined]
    proc = subprocess.Popen([*CLI, "exporter", "--listen", "127.0.0.1:0", "--duration", "60"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = []
        for line in proc.stdout:  # type: ignore[union-attr]
            said.append(line)
            if line.startswith("serving "):
                break
        assert said and said[-1].startswith("serving "), (said, proc.stderr.read() if proc.poll() else "")
        assert any("relaying the metrics of the daemon" in line for line in said), said
        page = httpx.get(said[-1].split()[1], timeout=30).text
    finally:
        proc.terminate()
        proc.wait(30)
    assert 'llmos_engine_up{' in page and "llmos_serve_requests_total" in page, page[:2000]
    assert page.count("# TYPE llmos_gpu_") == len(set(re.findall(r"# TYPE (llmos_gpu_\w+)", page)))  # no copies


def test_a_face_follows_its_daemon_when_it_comes_back_under_a_new_pid(tmp_path: Path) -> None:
    """systemd restarts the daemon: the old socket is gone for good, a new daemon (new pid, new
    socket) serves the same journal, and the attached face drives the new one without a restart."""
    env = {**cli_env(), "LLMOS_TUI_HOME": str(tmp_path / "home")}
    serve = [*CLI, "--n-ctx", "256", "--n-threads", "1", "--n-threads-batch", "1", "serve", "--listen", "127.0.0.1:0"]

    def start() -> tuple[subprocess.Popen[str], Path]:
        proc = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[str] = []
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "control socket " in line:
                return proc, Path(line.split("control socket ")[1].split()[0])
        raise AssertionError(seen)

    first, socket = start()
    second = None
    op = None
    try:
        old_env = os.environ.get("LLMOS_TUI_HOME")
        os.environ["LLMOS_TUI_HOME"] = env["LLMOS_TUI_HOME"]
        try:
            op = AttachedOperator(socket, face_config(), face="script")
        finally:
            if old_env is None:
                os.environ.pop("LLMOS_TUI_HOME", None)
            else:
                os.environ["LLMOS_TUI_HOME"] = old_env
        assert op.daemon["pid"] == first.pid
        first.terminate()
        first.wait(30)
        second, new_socket = start()
        assert new_socket != socket
        assert wait_for(lambda: op.daemon["pid"] == second.pid, 30), op.daemon
        assert op.socket == new_socket
        assert wait_for(lambda: op.supervisor.state == EngineState.READY, 30)
        assert op.snapshot()["pid"] == second.pid  # the verbs go to the new daemon too
    finally:
        if op is not None:
            op.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
