"""The Operator wiring: a journaled repair or undo survives a restart; the operator's own
settings still win when they change; read-only makes the doctor a dry run."""

from __future__ import annotations

from pathlib import Path

from llmos_tui.config import load_config
from llmos_tui.journal import Journal
from llmos_tui.core import build_core
from llmos_tui.engine.versions import params_of


def config(tmp_path: Path, **overrides):
    return load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "journal": str(tmp_path / "j.sqlite"),
                                  **overrides})


def first_run(tmp_path: Path):
    """One run of the engine with n_ctx=1024: the journal then holds the operator's base config."""
    op = build_core(config(tmp_path, n_ctx="1024"), telemetry=False, doctor=False, endpoint=False)
    op.start_engine()
    op.journal_writer.flush()
    op.close()
    journal = Journal(tmp_path / "j.sqlite")
    return journal, journal.active_config()


def test_a_journaled_repair_survives_a_restart_until_the_operator_changes_settings(tmp_path: Path) -> None:
    journal, base = first_run(tmp_path)
    assert base.source == "operator" and base.params["n_ctx"] == 1024
    smaller = params_of(base).replace(n_ctx=512)
    _action, repaired = journal.change_config(smaller, source="repair", kind="engine.smaller_ctx",
                                             proposed_by="auto", note="doctor: smaller context")
    journal.mark_good(repaired.id)  # it passed its verification
    journal.close()

    op = build_core(config(tmp_path, n_ctx="1024"), telemetry=False, doctor=False, endpoint=False)
    assert op.supervisor.params.n_ctx == 512
    assert any(repaired.entry_id in p for p in op.problems)
    op.close()

    op = build_core(config(tmp_path, n_ctx="768"), telemetry=False, doctor=False, endpoint=False)
    assert op.supervisor.params.n_ctx == 768 and not op.problems
    op.close()


def test_undo_from_the_command_line_is_what_the_next_start_runs(tmp_path: Path) -> None:
    from llmos_tui.cli import main

    journal, base = first_run(tmp_path)
    _action, first = journal.change_config(params_of(base).replace(n_batch=256, n_ubatch=256), source="repair")
    journal.mark_good(first.id)
    _action, second = journal.change_config(params_of(first).replace(n_ctx=512), source="repair")
    journal.mark_good(second.id)
    journal.close()
    assert main(["journal", "--journal", str(tmp_path / "j.sqlite"), "undo", second.entry_id]) == 0
    op = build_core(config(tmp_path, n_ctx="1024"), telemetry=False, doctor=False, endpoint=False)
    params = op.supervisor.params
    assert (params.n_ctx, params.n_batch) == (1024, 256), "back to the first repair, not to the operator's base"
    op.close()


def test_readonly_makes_the_doctor_a_dry_run(tmp_path: Path) -> None:
    op = build_core(config(tmp_path, readonly=True), telemetry=False, endpoint=False)
    try:
        assert op.doctor is not None and op.doctor.dry_run
    finally:
        op.close()
