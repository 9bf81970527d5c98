"""Compression: llama.cpp's quantizer in a child, quality math by hand, refusals, a full disk."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmos_tui.compress import quality as Q
from llmos_tui.compress.quantize import FTYPES, QuantizeError, estimate, journal_result, quantize
from llmos_tui.journal import Journal

DEMO = Path(__file__).resolve().parent.parent / "llmos_tui" / "data" / "demo.gguf"


# ---- the math, by hand -----------------------------------------------------------------
def test_perplexity_of_a_hand_computed_case():
    # two positions over a vocabulary of 2: p = [1/4, 3/4] (logits 0, ln 3), then uniform
    logits = np.array([[0.0, math.log(3)], [5.0, 5.0]])
    targets = [1, 0]
    nll = Q.token_nll(logits, targets)
    assert nll == pytest.approx([-math.log(0.75), math.log(2)])
    assert Q.perplexity(logits, targets) == pytest.approx(math.exp((-math.log(0.75) + math.log(2)) / 2))


def test_kl_divergence_of_a_hand_computed_case():
    ref = np.array([[0.0, math.log(3)], [1.0, 1.0]])  # P = [1/4, 3/4], [1/2, 1/2]
    cand = np.array([[0.0, 0.0], [1.0, 1.0]])  # Q = [1/2, 1/2], identical
    kl = Q.kl_per_position(ref, cand)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl[0] == pytest.approx(expected)
    assert kl[1] == pytest.approx(0.0, abs=1e-12)
    stats = Q.summarise_kl(kl, Q.same_top(ref, cand))
    assert stats.mean == pytest.approx(expected / 2)
    assert stats.max == pytest.approx(expected)
    assert stats.same_top == pytest.approx(0.5)  # position 0: argmax 1 vs a tie (argmax 0)


def test_kl_is_shift_invariant_and_not_symmetric():
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[3.0, 2.0, 1.0]])
    assert Q.kl_per_position(a, a + 7.5)[0] == pytest.approx(0.0, abs=1e-12)
    assert Q.kl_per_position(a, b)[0] > 0
    c = np.array([[0.0, 0.0, 4.0]])
    assert Q.kl_per_position(a, c)[0] != pytest.approx(Q.kl_per_position(c, a)[0])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        Q.kl_per_position(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        Q.token_nll(np.zeros((2, 3)), [0])


# ---- the quantizer ------------------------------------------------------------------------
def test_ftype_table_matches_the_binding():
    import llama_cpp

    for name, value in FTYPES.items():
        const = {"f32": "LLAMA_FTYPE_ALL_F32"}.get(name, f"LLAMA_FTYPE_MOSTLY_{name.upper()}")
        assert getattr(llama_cpp, const) == value, name


def test_quantize_f16_to_q8_0_loads_and_is_journaled(tmp_path):
    from llmos_tui.engine.params import EngineParams
    from llmos_tui.engine.supervisor import Supervisor

    out = tmp_path / "demo-Q8_0.gguf"
    seen: list[tuple[int, int]] = []
    result = quantize(DEMO, "q8_0", out, nthread=1, progress=lambda d, n, _name: seen.append((d, n)))
    assert out.exists() and not (tmp_path / "demo-Q8_0.gguf.part").exists()
    assert result.size_bytes == out.stat().st_size < DEMO.stat().st_size * 0.6
    assert result.size_bytes <= result.estimate_bytes  # the disk check's estimate is an upper one
    assert seen and seen[-1][0] == seen[-1][1] == result.n_tensors  # per-tensor progress from llama.cpp's log

    from llmos_tui.engine.gguf_info import read_model_info

    assert read_model_info(out).quantization.upper() == "Q8_0"
    sup = Supervisor(EngineParams(model_path=str(out), n_ctx=256, n_threads=1, n_threads_batch=1))
    try:
        sup.start(timeout=60)
        reply = sup.chat([{"role": "user", "content": "hello"}], max_tokens=8, temperature=0.0).wait(30)
        assert reply.status == "done" and reply.metrics["gen_tokens"] > 0
    finally:
        sup.stop()

    with Journal(tmp_path / "j.db") as journal:
        model_id = journal_result(journal, result)
        record = journal.get_model_file(model_id)
        assert record.quantization == "q8_0" and record.parent_path == str(DEMO.resolve())
        lineage = journal.model_lineage(out)
        assert [m.path for m in lineage] == [str(out), str(DEMO.resolve())]
        assert journal.events("model_file")[0]["data"]["model_file"] == f"mdl:{model_id}"
        shown = journal.show(f"mdl:{model_id}")  # `llmos-tui journal show mdl:N`
        assert shown["type"] == "model" and shown["quantization"] == "q8_0" and shown["parent"]
        assert f"mdl:{model_id}" in journal.show(shown["parent"])["children"]
        assert any(e.id == f"mdl:{model_id}" for e in journal.timeline(limit=20))


def test_an_existing_output_is_never_overwritten(tmp_path):
    out = tmp_path / "taken.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(QuantizeError, match="refusing to overwrite"):
        quantize(DEMO, "q8_0", out)
    assert out.read_bytes() == b"precious"


def test_bad_inputs_are_one_line_refusals(tmp_path):
    with pytest.raises(QuantizeError, match="unknown quantisation type"):
        quantize(DEMO, "q9_9", tmp_path / "x.gguf")
    with pytest.raises(QuantizeError, match="not found"):
        quantize(tmp_path / "missing.gguf", "q8_0", tmp_path / "x.gguf")
    q8 = tmp_path / "q8.gguf"
    quantize(DEMO, "q8_0", q8, nthread=1)
    with pytest.raises(QuantizeError, match="already quantised"):
        quantize(q8, "q4_0", tmp_path / "q4.gguf")


def test_cli_refuses_overwrite_with_exit_1(tmp_path):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "quantize", "--model", str(DEMO), "--to", "q8_0",
                           "--out", str(out), "--journal", str(tmp_path / "j.db")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "refusing to overwrite" in proc.stderr and proc.stderr.count("\n") == 1
    assert out.read_bytes() == b"x"


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 1 MiB filesystem (tmpfs): needs root and mount permission, else the test is skipped."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tiny filesystem needs root to mount a tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_is_refused_before_quantizing(tiny_fs):
    need = estimate(DEMO, "q8_0").bytes
    assert need > shutil.disk_usage(tiny_fs).free
    with pytest.raises(QuantizeError, match="not enough free disk"):
        quantize(DEMO, "q8_0", tiny_fs / "out.gguf")
    assert list(tiny_fs.iterdir()) == []


def test_a_disk_that_fills_while_quantizing_leaves_nothing_behind(tiny_fs):
    # skip the pre-check: the real quantizer meets the full disk, in its child
    with pytest.raises(QuantizeError, match="quantizer failed|no file"):
        quantize(DEMO, "q8_0", tiny_fs / "out.gguf", check_space=False, nthread=1)
    assert list(tiny_fs.iterdir()) == []


# ---- quality of real variants ---------------------------------------------------------------
def test_kld_of_the_source_against_itself_is_zero_and_q8_0_is_small(tmp_path):
    from llmos_tui.compress.evaluate import evaluate

    ref = tmp_path / "ref.npy"
    base = evaluate(DEMO, save_logits=ref, max_chunks=2, n_threads=1)
    assert base.ok and base.n_scored > 100 and base.perplexity > 1
    same = evaluate(DEMO, ref_logits=ref, max_chunks=2, n_threads=1)
    assert same.kld["mean"] == pytest.approx(0.0, abs=1e-6) and same.kld["same_top"] == 1.0
    q8 = tmp_path / "q8.gguf"
    quantize(DEMO, "q8_0", q8, nthread=1)
    res = evaluate(q8, ref_logits=ref, max_chunks=2, n_threads=1)
    assert res.ok and 0 < res.kld["mean"] < 0.05


def test_a_kv_cache_the_head_size_refuses_is_reported_not_raised():
    from llmos_tui.compress.variants import kv_cache_quality

    rows = kv_cache_quality(str(DEMO), types=("q8_0",), max_chunks=1, n_threads=1)
    assert rows[0]["cache"] == "f16" and rows[0]["ok"]
    assert rows[1]["cache"] == "q8_0" and not rows[1]["ok"]
    assert "does not divide" in rows[1]["reason"]  # the demo model's head size is 40


def test_pick_the_fastest_within_a_budget():
    from llmos_tui.compress.variants import Variant, pick

    rows = [Variant("a", "F16", True, 100, tg_tok_s=10, kld_mean=0.0, perplexity=5.0),
            Variant("b", "Q8_0", False, 50, tg_tok_s=15, kld_mean=0.01, perplexity=5.1),
            Variant("c", "Q4_K_M", False, 30, tg_tok_s=20, kld_mean=0.08, perplexity=6.0)]
    assert pick(rows, max_kld=0.05)[0].label == "Q8_0"
    assert pick(rows, max_kld=0.1)[0].label == "Q4_K_M"
    assert pick(rows, max_ppl_ratio=1.01)[0].label == "F16"
    none, why = pick(rows, max_kld=-1)
    assert none is None and "no measured variant" in why


def test_compare_cli_measures_and_picks_within_a_budget(tmp_path):
    import json as _json

    q8 = tmp_path / "demo-Q8_0.gguf"
    quantize(DEMO, "q8_0", q8, nthread=1)
    proc = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "compare", "--model", str(DEMO), str(q8),
                           "--no-speed", "--chunks", "2", "--max-kld", "0.05", "--json",
                           "--journal", str(tmp_path / "j.db")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = _json.loads(proc.stdout)
    assert [v["label"].upper() for v in out["variants"]] == ["F16", "Q8_0"]
    assert out["pick"]["label"].upper() == "Q8_0" and "smallest" in out["why"]
    strict = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "compare", "--model", str(DEMO), str(q8),
                             "--no-speed", "--chunks", "2", "--max-kld", "0.0000001", "--max-ppl-ratio", "0.5",
                             "--journal", str(tmp_path / "j.db")], capture_output=True, text=True, timeout=120)
    assert strict.returncode == 1 and "no measured variant fits" in strict.stdout


def test_compare_exits_1_when_a_variant_could_not_be_measured_and_still_measures_the_rest(tmp_path):
    import json as _json

    bad = tmp_path / "broken-Q4_0.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    proc = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "compare", "--model", str(DEMO), str(bad),
                           "--no-speed", "--chunks", "2", "--json", "--journal", str(tmp_path / "j.db")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    rows = _json.loads(proc.stdout)["variants"]
    assert rows[0]["perplexity"] and not rows[0]["error"], rows[0]  # the source is measured all the same
    assert rows[1]["error"] and rows[1]["perplexity"] is None
    assert "1 of 2 variants not measured" in proc.stderr and "broken-Q4_0.gguf" in proc.stderr


def test_compare_apply_switches_the_model_through_the_change_transaction_and_undo_reverts(tmp_path):
    import json as _json

    q8 = tmp_path / "demo-Q8_0.gguf"
    quantize(DEMO, "q8_0", q8, nthread=1)
    jpath = tmp_path / "j.db"
    common = ["--journal", str(jpath), "--n-threads", "1", "--n-threads-batch", "1"]
    proc = subprocess.run([sys.executable, "-m", "llmos_tui.cli", *common, "compare", "--model", str(DEMO), str(q8),
                           "--no-speed", "--chunks", "2", "--max-kld", "0.05", "--apply", "--json"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    answer = _json.loads(proc.stdout)
    applied = answer["applied"]
    assert applied["ok"] and applied["state"] == "applied", applied
    # what it prints is what the journal holds: the active version runs the pick
    assert answer["journal_active"]["id"] == f"cfg:{applied['config_id']}"
    assert answer["journal_active"]["model_path"] == str(q8.resolve())
    with Journal(jpath) as journal:
        active = journal.active_config()
        assert active.model_path == str(q8) and active.entry_id == f"cfg:{applied['config_id']}"
        assert journal.get_action(applied["action_id"]).kind == "model_switch"
    # the apply lasts: the next start with the same configured settings runs the pick
    from llmos_tui.config import load_config
    from llmos_tui.core.wiring import build_core

    cfg = load_config(overrides={"journal": str(jpath), "n_threads": 1, "n_threads_batch": 1})
    with build_core(cfg, "oneshot", telemetry=False, doctor=False, endpoint=False) as again:
        assert Path(again.supervisor.params.model_path).resolve() == q8.resolve(), again.problems
    undo = subprocess.run([sys.executable, "-m", "llmos_tui.cli", *common, "journal", "undo",
                           f"cfg:{applied['config_id']}"], capture_output=True, text=True, timeout=60)
    assert undo.returncode == 0, undo.stderr
    with Journal(jpath) as journal:
        assert Path(journal.active_config().model_path).resolve() == DEMO.resolve(), "undo: back to the source"


@pytest.mark.parametrize("qtype", ["q4_0", "q4_k_m", "q5_k_m"])
def test_the_size_estimate_is_an_upper_bound(tmp_path, qtype):
    result = quantize(DEMO, qtype, tmp_path / f"{qtype}.gguf", nthread=1)
    assert result.size_bytes <= result.estimate_bytes <= result.size_bytes * 1.6


def _cli(*argv: str, journal: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmos_tui.cli", "--journal", str(journal), *argv],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv, says", [
    (["quantize", "--model", "/no/such.gguf", "--to", "q8_0"], "--model: no such file"),
    (["quantize", "--to", "q9_9"], "--to: unknown quantisation type"),
    (["quantize", "--to", "q8_0", "--threads", "many"], "--threads must be a whole number"),
    (["quantize", "--to", "q8_0", "--threads", "-2"], "--threads must be at least 0"),
    (["compare", "/no/such.gguf"], "VARIANT.gguf: no such file"),
    (["compare", str(DEMO), "--text", "/no/such.txt"], "--text: no such file"),
    (["compare", str(DEMO), "--eval-ctx", "abc"], "--eval-ctx must be a whole number"),
    (["compare", str(DEMO), "--eval-ctx", "4"], "--eval-ctx must be at least 16"),
    (["compare", str(DEMO), "--chunks", "0"], "--chunks must be at least 1"),
    (["compare", str(DEMO), "--max-kld", "garbage"], "--max-kld must be a number"),
    (["compare", str(DEMO), "--max-kld", "-0.1"], "--max-kld must be at least 0"),
    (["compare", str(DEMO), "--max-ppl-ratio", "inf"], "--max-ppl-ratio must be a finite number"),
    (["compare", str(DEMO), "--max-ppl-ratio", "0"], "--max-ppl-ratio must be above 0"),
    (["compare", str(DEMO), "--apply"], "--apply needs a budget"),
])
def test_every_value_option_is_checked_before_any_work(tmp_path, argv, says):
    jpath = tmp_path / "j.db"
    if argv[0] == "quantize" and "--model" not in argv:
        argv = [argv[0], "--model", str(DEMO), *argv[1:], "--out", str(tmp_path / "out.gguf")]
    proc = _cli(*argv, journal=jpath)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert not jpath.exists() and not (tmp_path / "out.gguf").exists()  # nothing was started or written


def test_quantize_exit_code_agrees_with_what_it_journaled(tmp_path):
    not_a_journal = tmp_path / "j.db"
    not_a_journal.write_text("this is not SQLite\n" * 10)
    out = tmp_path / "q8.gguf"
    proc = _cli("quantize", "--model", str(DEMO), "--to", "q8_0", "--out", str(out), "--threads", "1",
                journal=not_a_journal, timeout=120)
    assert out.exists()  # the file is made...
    assert "NOT journaled" in proc.stdout and "was made but NOT journaled" in proc.stderr
    assert proc.returncode == 1  # ...but not journaled, and the exit code says so
    good = tmp_path / "good.db"
    again = _cli("quantize", "--model", str(DEMO), "--to", "q4_0", "--out", str(tmp_path / "q4.gguf"),
                 "--threads", "1", journal=good, timeout=120)
    assert again.returncode == 0 and "journaled as mdl:" in again.stdout, again.stderr
    with Journal(good) as journal:
        assert journal.model_file(tmp_path / "q4.gguf") is not None
