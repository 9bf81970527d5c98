"""record_surface.py measures a grid in interleaved passes: a configuration's runs come from
different times of the recording (a drift of the machine's speed is noise within a configuration,
not a difference between configurations), a refused configuration is not run again, and a rerun
continues where the file stopped. Real runs of the embedded demo model, three configurations."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def test_passes_interleave_the_reps_and_a_rerun_continues(tmp_path):
    rec = _load("record_surface")
    out = tmp_path / "surface.csv"
    args = ["--model", "demo", "--grid", "small", "--reps", "2", "--limit", "3", "--out", str(out)]
    assert rec.main(args) == 0
    rows = _rows(out)
    configs = {r["config"] for r in rows}
    assert len(configs) == 3
    passes = [int(r["pass"]) for r in rows]
    assert passes == sorted(passes), "the whole first pass comes before the second"
    for config in configs:
        mine = [r for r in rows if r["config"] == config]
        if mine[0]["ok"] == "1":
            assert [(int(r["pass"]), int(r["rep"])) for r in mine] == [(0, 0), (1, 1)], mine
        else:  # refused by llama.cpp: one row, not measured again in the second pass
            assert len(mine) == 1 and mine[0]["error"], mine
    assert any(r["ok"] == "1" for r in rows)
    facts = _load("bench_tuner").load_surface(out)
    assert "pass" not in facts.knobs and "rep" not in facts.knobs
    assert facts.facts["bench"]["passes"] == 2 and facts.facts["bench"]["reps_per_child"] == 1

    before = out.read_text()
    assert rec.main(args) == 0
    assert out.read_text() == before, "a rerun of a finished recording measures nothing again"


def test_reps_must_split_evenly_between_passes(tmp_path, capsys):
    rec = _load("record_surface")
    try:
        rec.main(["--model", "demo", "--reps", "3", "--passes", "2", "--out", str(tmp_path / "s.csv")])
    except SystemExit as exc:
        assert exc.code == 2
    else:  # pragma: no cover - the assertion below names the failure
        raise AssertionError("--reps 3 --passes 2 was accepted")
    assert "multiple of --passes" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_a_row_can_be_one_trial_as_the_tuner_runs_it(tmp_path, capsys):
    """--trial-reps K: one row per engine child, the mean of its K reps (what the tuner is told for a
    trial), so a replay draws trials with a real trial's noise."""
    rec = _load("record_surface")
    out = tmp_path / "trials.csv"
    assert rec.main(["--model", "demo", "--grid", "small", "--reps", "2", "--trial-reps", "3", "--limit", "2",
                     "--out", str(out)]) == 0
    rows = _rows(out)
    for config in {r["config"] for r in rows}:
        mine = [r for r in rows if r["config"] == config]
        if mine[0]["ok"] == "1":  # one row per pass, however many reps the child ran
            assert [(int(r["pass"]), int(r["rep"])) for r in mine] == [(0, 0), (1, 1)], mine
            assert all(float(r["tg_tok_s"]) > 0 and float(r["pp_tok_s"]) > 0 for r in mine)
    surface = _load("bench_tuner").load_surface(out)
    assert surface.facts["bench"]["reps_per_child"] == 3 and "mean of 3 reps" in surface.facts["bench"]["row"]
    try:  # two rows per child would not be one trial each
        rec.main(["--model", "demo", "--reps", "4", "--passes", "2", "--trial-reps", "3",
                  "--out", str(tmp_path / "bad.csv")])
    except SystemExit as exc:
        assert exc.code == 2
    else:  # pragma: no cover
        raise AssertionError("--trial-reps with two rows per child was accepted")
    assert "--passes must equal --reps" in capsys.readouterr().err and not (tmp_path / "bad.csv").exists()
