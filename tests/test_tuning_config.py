"""StudyConfig: resolved once from the options, every value checked, stored in the study's row and
read back from it for a resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_tui.errors import ConfigError
from llmos_tui.journal import Journal
from llmos_tui.tuning.measure import BenchSpec
from llmos_tui.tuning.study_config import StudyConfig


def test_a_config_survives_the_journal_row_it_is_stored_in(tmp_path: Path):
    cfg = StudyConfig.from_options(trials=5, objective="mix", weights={"pp": 0.3, "tg": 0.7}, vram_budget="80%",
                                   rss_budget="4GiB", ctx=512, strategy="random", seed=3,
                                   spec=BenchSpec(n_prompt=16, n_gen=4, reps=1), verify_rounds=8, min_gain=0.05,
                                   apply=True, start_points=[{"n_threads": 1}])
    with Journal(tmp_path / "j.db") as j:
        sid = j.start_study({"dimensions": []}, "mix", settings={"study_config": cfg.to_row()})
        assert StudyConfig.from_row(j.get_study(sid)) == cfg


def test_a_row_from_before_the_config_resolves_from_its_older_keys():
    row = {"settings": {"objective": {"name": "pp", "weights": {}}, "strategy": "rf", "seed": 4, "trials": 9,
                        "n_ctx": 256, "vram_budget_arg": "70%", "spec": {"n_prompt": 32, "n_gen": 8, "depth": 0,
                                                                          "reps": 2, "warmup": True}}}
    cfg = StudyConfig.from_row(row)
    assert (cfg.objective, cfg.strategy, cfg.seed, cfg.trials, cfg.ctx, cfg.vram_budget) == ("pp", "rf", 4, 9, 256, "70%")
    assert cfg.spec == BenchSpec(n_prompt=32, n_gen=8, reps=2)
    assert cfg.with_options(trials=2, objective=None).trials == 2  # given again wins; None keeps


@pytest.mark.parametrize("options, words", [
    ({"vram_budget": "garbage"}, "bad vram budget 'garbage'"),
    ({"rss_budget": "0"}, "bad rss budget '0'"),
    ({"trials": 0}, "trials must be at least 1"),
    ({"objective": "speed"}, "unknown objective 'speed'"),
    ({"strategy": "annealing"}, "unknown strategy 'annealing'"),
    ({"min_gain": 1.5}, "minimum gain"),
    ({"colour": "red"}, "unknown study option(s): colour"),
])
def test_a_bad_option_is_one_clear_line_before_any_work(options, words):
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_options(**options)
    assert words in str(err.value) and "\n" not in str(err.value)
