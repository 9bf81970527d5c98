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
