"""The tuning screen (F6) through Textual's pilot: a 3-trial study on the demo model, live."""

from __future__ import annotations

from textual.widgets import DataTable, RichLog

from llmos_tui.config import load_config
from llmos_tui.core.wiring import build_core
from llmos_tui.tuning.measure import BenchSpec
from llmos_tui.ui.app import LlmosApp
from llmos_tui.ui.tuning_screen import TuningScreen
from tests.pilot import wait_for


async def test_f6_runs_a_three_trial_study_live_and_the_engine_comes_back() -> None:
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "n_ctx": 128})
    op = build_core(config, "oneshot", doctor=False, telemetry=False)
    app = LlmosApp(op, start_screen="chat")
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await wait_for(pilot, lambda: op.supervisor.is_ready)
            await pilot.press("f6")
            await wait_for(pilot, lambda: isinstance(app.screen, TuningScreen))
            screen = app.screen
            screen.options = {"trials": 3, "spec": BenchSpec(n_prompt=16, n_gen=4, reps=1), "verify": False,
                              "strategy": "random", "n_initial": 2, "vram_budget": None}
            paused: list[bool] = []
            op.supervisor.subscribe(lambda ev: ev.kind == "state" and paused.append(ev.data["state"] == "paused"))
            await pilot.press("s")
            await wait_for(pilot, lambda: screen.report is not None, 90)
            await pilot.pause(0.2)
            assert any(paused)  # chat was paused, with a clear state
            table = screen.query_one("#tune-trials", DataTable)
            assert table.row_count == len(screen.trials) >= 3  # the budget, then any re-measure of a lucky leader
            assert all(t["origin"].startswith("confirm") for t in screen.trials[3:])
            assert f"{len(screen.trials)} trials" in str(screen.query_one("#tune-status").render())
            # the log wraps long lines to the screen's width: compare with the whitespace folded
            log_text = " ".join(" ".join(str(line.text) for line in screen.query_one("#tune-log", RichLog).lines).split())
            assert f"std:{screen.report['study_id']}" in log_text
            # the study's notes show here as in the CLI: a tg study holds the prompt's knobs
            assert "held at the running values (tg: a one-token decode does not use them)" in log_text, log_text
            for trial in screen.trials:
                if trial["outcome"] != "ok":
                    assert trial["reason"] and " ".join(trial["reason"][:30].split()) in log_text  # with reasons
            assert screen.best is not None
            await pilot.press("p")  # the parameter plot moves to the next parameter
            assert screen.param_index == 1
            await pilot.press("a")  # not verified: nothing applied
            await pilot.pause(0.1)
            await wait_for(pilot, lambda: op.supervisor.is_ready)
            assert op.supervisor.params.n_ctx == 128
    finally:
        op.close()
