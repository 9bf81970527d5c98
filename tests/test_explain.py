"""The model explains a finding: the prompt is built from the journal and fits the context, an
unhealthy engine is refused with a reason, and the pipeline streams on the demo model — from the
core, the CLI (`journal explain`) and the doctor screen (`e`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmos_tui.config import load_config
from llmos_tui.core import explain
from llmos_tui.core.wiring import build_core
from llmos_tui.engine.params import EngineParams
from llmos_tui.journal import Journal
from llmos_tui.paths import DEMO_MODEL


def seed(journal: Journal) -> int:
    """A finding with a long series, its action, an active configuration, a crash next to it and
    unrelated older actions: more than a small context holds."""
    params = EngineParams(model_path=str(DEMO_MODEL), n_ctx=1024, n_threads=2, n_threads_batch=2)
    config = journal.record_config(params)
    journal.mark_good(config.id)
    for i in range(6):
        journal.propose_action("restart", {"n": i}, note=f"an older operator restart {i} " + "x" * 80)
    now = time.time()
    journal.record_event("crashed", {"signal": "SIGABRT", "log": ["GGML_ASSERT(ctx) failed"] * 3}, ts=now - 30)
    finding = journal.record_finding(
        "engine.tps_drop", "warning", "Generation speed fell 45% below its baseline",
        {"gen_tps": [118 - (i % 7) * 9 for i in range(200)], "baseline_tps": 118.0, "n_threads": 2,
         "log_tail": ["llama_decode: slow path " + "y" * 120] * 12}, ts=now)
    action = journal.propose_action("reload", {"n_threads": 2}, finding_id=finding, note="restore threads")
    journal.set_action_state(action, "rejected", note="operator said no")
    return finding


def test_prompt_comes_from_the_journal_and_fits_by_relevance(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        fid = seed(journal)
        roomy = explain.build_prompt(journal, fid, n_ctx=16384)
        tight = explain.build_prompt(journal, fid, n_ctx=1024, reply_tokens=128)
    keys = [e.key for e in roomy.kept]
    assert keys[0] == "finding" and not roomy.dropped
    assert {"evidence.gen_tps", "evidence.baseline_tps", "cfg:1", "evt:1"} <= set(keys)
    assert any(k.startswith("act:") for k in keys)
    user = roomy.messages[1]["content"]
    assert "fnd:1" in user and "Generation speed fell 45%" in user and "SIGABRT" in user
    assert "200 values" in user  # a long series is summarised, not pasted
    # tight: it fits, the finding stays, and what goes first is the least relevant
    assert tight.prompt_tokens + tight.reply_tokens <= 1024
    assert tight.kept[0].key == "finding" and tight.dropped
    kept_scores = [e.score for e in tight.kept if not e.required]
    assert min(kept_scores) >= max(e.score for e in tight.dropped) or tight.cut
    dropped = {e.key for e in tight.dropped}
    assert "evidence.baseline_tps" not in dropped  # the finding's own evidence outlives older unrelated actions
    assert any(e.text.startswith("recent action") for e in tight.dropped)
    with pytest.raises(explain.ExplainRefused, match="too small"):
        with Journal(tmp_path / "j.sqlite") as journal:
            explain.build_prompt(journal, fid, n_ctx=300)


def test_an_unhealthy_engine_is_refused_with_a_reason(tmp_path: Path) -> None:
    config = load_config(overrides={"journal": str(tmp_path / "j.sqlite")})
    op = build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)
    try:
        assert "not ready" in explain.refusal(op) or "stopped" in explain.refusal(op)
        with Journal(config.journal_file) as journal:
            prompt = explain.build_prompt(journal, seed(journal), n_ctx=2048)
        with pytest.raises(explain.ExplainRefused):
            explain.ask(op, prompt)
        op.supervisor.state = type(op.supervisor.state)("crashed")
        op.supervisor.last_error = "engine killed by SIGABRT"
        assert "crashed (engine killed by SIGABRT)" in explain.refusal(op)
    finally:
        op.close()


def test_the_pipeline_streams_on_the_demo_model_outside_the_conversation(tmp_path: Path) -> None:
    config = load_config(overrides={"journal": str(tmp_path / "j.sqlite"), "n_ctx": 1024, "n_threads": 2,
                                    "n_threads_batch": 2})
    op = build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)
    try:
        assert op.try_start_engine() is None
        assert explain.refusal(op) is None
        with Journal(config.journal_file) as journal:
            prompt = explain.build_prompt(journal, seed(journal), n_ctx=explain.engine_n_ctx(op), reply_tokens=64)
        pieces: list[str] = []
        reply = explain.ask(op, prompt, on_piece=pieces.append)
        reply.wait(60)
        assert reply.status == "done" and reply.text and "".join(pieces) == reply.text
        assert 0 < reply.metrics["prompt_tokens"] <= prompt.prompt_tokens  # the byte count is an upper bound
        assert reply.metrics["prompt_tokens"] + reply.metrics["gen_tokens"] <= 1024
        assert op.chat.messages == []  # the explanation is not part of the operator's chat
    finally:
        op.close()


def test_cli_journal_explain(tmp_path: Path, llmos_home: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        fid = seed(journal)
    run = [sys.executable, "-m", "llmos_tui.cli", "--n-threads", "2", "journal", "--journal", str(path), "explain"]
    ok = subprocess.run(run + [f"fnd:{fid}", "--max-tokens", "48"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    out = ok.stdout
    assert out.index("evidence from the journal") < out.index("the model's words") < out.index("prompt tok")
    assert "Generation speed fell 45%" in out and "an explanation, not a measurement" in out
    missing = subprocess.run(run + ["fnd:99"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no finding fnd:99" in missing.stderr and missing.stderr.count("\n") == 1
    broken = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "--model", str(tmp_path / "absent.gguf"),
                             "journal", "--journal", str(path), "explain", f"fnd:{fid}"],
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and "not explained: the engine did not start" in broken.stderr
    assert "the model's words" not in broken.stdout


async def test_e_on_the_doctor_screen_streams_beside_the_evidence(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from llmos_tui.doctor.api import Finding
    from llmos_tui.ui.app import LlmosApp
    from llmos_tui.ui.chat_screen import ReplyView
    from llmos_tui.ui.explain_view import ExplainScreen

    config = load_config(overrides={"journal": str(tmp_path / "j.sqlite"), "n_ctx": 1024, "n_threads": 2,
                                    "n_threads_batch": 2})
    op = build_core(config, "oneshot", telemetry=False, doctor=True, endpoint=False)
    app = LlmosApp(op, start_screen="doctor", start_engine=True)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 60
        while not op.supervisor.is_ready and time.monotonic() < deadline:
            await pilot.pause(0.05)
        finding = op.doctor._add(Finding(title="GPU 0 power capped at 699 W of 700 W", severity="warning",
                                         detector="gpu.power", evidence={"power_w": 699, "limit_w": 700},
                                         fingerprint="gpu.power:0"))
        assert finding.journal_id is not None
        app.screen.refresh_findings()
        await pilot.pause()
        app.screen.query_one(DataTable).focus()
        await pilot.press("e")
        while not isinstance(app.screen, ExplainScreen) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        screen = app.screen
        view = screen.query_one(ReplyView)
        while "prompt tok" not in str(view.footer_line.render()) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        assert "prompt tok" in str(view.footer_line.render())
        assert view.body.source.strip()
        evidence = str(screen.query_one("#explain-evidence").render())
        assert "power_w" in evidence and "699" in evidence
        assert "THE MODEL'S WORDS" in str(screen.query_one("#explain-model-label").render())
        await pilot.press("escape")
        await pilot.pause()
        # an engine that is down: the screen says why and the model is not asked
        op.supervisor.stop()
        await pilot.pause(0.2)
        await pilot.press("e")
        while not isinstance(app.screen, ExplainScreen) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        view = app.screen.query_one(ReplyView)
        while "not asked" not in str(view.footer_line.render()) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert "not asked: the engine is stopped" in str(view.footer_line.render())
        assert not view.body.source.strip()
    op.close()
