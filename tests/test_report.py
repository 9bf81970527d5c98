"""`llmos-tui report`: the digest from the journal; the done-criterion: `report --since 1h`
prints the incidents of an `inject oom` run with their narration."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from llmos_tui.cli.main import main
from llmos_tui.cli.report import _uptime, parse_when, percentile


def test_report_since_1h_prints_the_incidents_of_an_inject_oom_run_with_their_narration(
        tmp_path: Path, capsys) -> None:
    jpath = tmp_path / "j.sqlite"
    rc = main(["inject", "oom", "--n-threads", "2", "--n-ctx", "1024", "--journal", str(jpath), "--timeout", "60"])
    assert rc == 0, capsys.readouterr().out
    capsys.readouterr()
    assert main(["report", "--since", "1h", "--journal", str(jpath)]) == 0
    out = capsys.readouterr().out
    assert "incidents (1)" in out, out
    assert "engine.oom: GPU memory allocation failed" in out
    assert "      fact: llama.cpp could not allocate GPU memory" in out
    assert "repair act:" in out and "engine.smaller_batch: proposed -> applied -> verified" in out
    assert "by repair: good, active now" in out, "the repair's configuration is a change of the span"
    assert "1 load(s)" in out or "2 load(s)" in out
    # the same as JSON and as Markdown
    assert main(["report", "--since", "1h", "--journal", str(jpath), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (incident,) = report["incidents"]
    assert incident["narration_kind"] == "fact" and incident["narration"].startswith("llama.cpp could not allocate")
    assert incident["end_state"] == "verified"
    assert report["uptime"]["up_at_end"] is False  # inject stops its engine when it ends
    assert main(["report", "--since", "1h", "--journal", str(jpath), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# llmos-tui report") and "\n## incidents (1)\n" in md and "  - fact: llama.cpp" in md
    # a span before the run holds none of it
    assert main(["report", "--since", "3h", "--until", "2h", "--journal", str(jpath)]) == 0
    assert "incidents (0)" in capsys.readouterr().out


def test_since_reads_a_clock_time_as_the_last_time_the_clock_read_it() -> None:
    now = datetime(2026, 12, 6, 1, 30).timestamp()
    assert parse_when("22:00", now) == datetime(2026, 12, 5, 22, 0).timestamp()
    assert parse_when("01:00", now) == datetime(2026, 12, 6, 1, 0).timestamp()
    assert parse_when("1h", now) == now - 3600
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == 4.6


def test_uptime_counts_the_serving_spans() -> None:
    events = [{"ts": 50.0, "kind": "loaded"},  # before the span: it began serving
              {"ts": 130.0, "kind": "crashed"}, {"ts": 140.0, "kind": "loaded"}]
    up = _uptime(events, 100.0, 200.0)
    assert up["up_s"] == 90.0 and up["up_pct"] == 90.0 and up["crashes"] == 1 and up["up_at_end"]


# ---- rollups: the flight recorder ----------------------------------------------------------------
def test_rollups_keep_10s_and_1min_means_bounded_by_age_and_rows(tmp_path: Path) -> None:
    from llmos_tui.journal import Journal
    from llmos_tui.journal.rollups import RollupRecorder, Rollups

    journal = Journal(tmp_path / "j.db")
    written: list[tuple[int, float, dict]] = []
    recorder = RollupRecorder(lambda res, ts, means: written.append((res, ts, means)))
    t0 = 1_800_000_000.0  # a multiple of 60
    for i in range(130):  # one sample a second: 0..129 s
        recorder.add(t0 + i, {"gpu0.temp": 50.0 + (i // 10), "engine.gen_tps": None, "x": float("nan")})
    recorder.close()
    tens = [(ts, m) for res, ts, m in written if res == 10]
    minutes = [(ts, m) for res, ts, m in written if res == 60]
    assert len(tens) == 13 and tens[0] == (t0, {"gpu0.temp": 50.0}) and tens[-1][1] == {"gpu0.temp": 62.0}
    assert [ts for ts, _ in minutes] == [t0, t0 + 60, t0 + 120]
    assert minutes[0][1]["gpu0.temp"] == sum(50.0 + i // 10 for i in range(60)) / 60
    # the repository: bounded by age and by rows, read back at the finest resolution that reaches back
    rollups = Rollups(journal.connection, keep={10: (3600.0, 5), 60: (86400.0, 100)})
    for res, ts, means in written:
        rollups.record(res, ts, means)
    rollups.record(10, t0 - 7200, {"gpu0.temp": 1.0})  # past the 10 s rows' age
    rollups.prune(now=t0 + 130)
    assert rollups.count(10) == 5 and rollups.count(60) == 3
    res, points = rollups.series("gpu0.temp", t0, t0 + 200)
    assert res == 60 and [v for _, v in points][-1] == 62.0, "the 10 s rows no longer reach back to t0"
    res, points = rollups.series("gpu0.temp", t0 + 80, t0 + 200)
    assert res == 10 and points[-1] == (t0 + 120, 62.0)
    journal.close()


def test_rollups_hold_the_journal_under_its_size_bound_oldest_first(tmp_path: Path) -> None:
    from llmos_tui.journal import Journal
    from llmos_tui.journal.rollups import RollupRetention

    journal = Journal(tmp_path / "j.db")
    rollups = journal.rollups
    rollups.configure(RollupRetention(max_bytes=float("inf")))
    now = time.time()
    wide = {f"gpu0.series{i}": float(i) for i in range(40)}  # about 1 KB a row
    for i in range(3000):
        rollups.record(10 if i % 2 else 60, now - 3000 + i, wide)
    before = rollups.used_bytes()
    assert before > 3 * 1024 * 1024
    bound = before // 2
    rollups.configure(RollupRetention(max_bytes=bound))  # prunes at once
    assert rollups.used_bytes() <= bound
    left = journal.connection.query("SELECT MIN(ts) AS oldest, COUNT(*) AS n FROM rollups")[0]
    assert 0 < left["n"] < 3000
    # the oldest went first: what is left is the newest stretch, unbroken
    assert abs(left["oldest"] - (now - left["n"])) < 1e-3
    # the file does not grow past the bound as recording goes on (freed pages are reused)
    for i in range(1000):
        rollups.record(10, now + i, wide)
    rollups.prune()
    assert rollups.used_bytes() <= bound
    journal.close()


def test_a_live_core_records_rollups(tmp_path: Path, monkeypatch) -> None:
    from llmos_tui.config import load_config
    from llmos_tui.core.wiring import build_core
    from llmos_tui.journal import Journal

    monkeypatch.setenv("LLMOS_TUI_HOME", str(tmp_path))
    config = load_config(tmp_path / "none.toml")
    config.journal_path = tmp_path / "j.sqlite"
    config.telemetry_interval = 0.5
    started = time.time()
    op = build_core(config, "live", doctor=False, endpoint=False)
    try:
        deadline = time.time() + 25
        while time.time() < deadline and op.sampler.series.total < 24:  # 12 s of samples: a 10 s bucket ends
            time.sleep(0.5)
    finally:
        op.close()
    with Journal(config.journal_path) as journal:
        assert journal.rollups.count(10) >= 1 and journal.rollups.count(60) >= 1
        # every point of this run (a bucket's time may lie before the start: buckets are aligned)
        res, points = journal.rollups.series("host.cpu", started - 60)
        assert res == 10 and points


def test_the_report_reads_the_rollups(tmp_path: Path, capsys) -> None:
    from llmos_tui.journal import Journal

    jpath = tmp_path / "j.sqlite"
    now = time.time()
    with Journal(jpath) as journal:
        for i in range(30):
            journal.rollups.record(60, now - 1800 + 60 * i, {"gpu0.temp": 60.0 + i, "engine.rolling_tps": 40.0})
    assert main(["report", "--since", "1h", "--journal", str(jpath), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["telemetry"]["gpu0.temp"] == {"res_s": 60, "max": 89.0, "points": 30}
    assert report["telemetry"]["engine.rolling_tps"]["p50"] == 40.0
    assert main(["report", "--since", "1h", "--journal", str(jpath)]) == 0
    assert "telemetry (rollups): gpu0.temp max 89.0, engine.rolling_tps p50 40.0" in capsys.readouterr().out
