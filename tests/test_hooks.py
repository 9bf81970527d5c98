"""Event hooks: the event as JSON on stdin, off the doctor's thread, rate-capped, time-limited,
failures told and journaled; and the done-criterion: on_action receives an `inject oom` repair."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from llmos_tui.core.hooks import Hooks, HookSettings
from llmos_tui.errors import ConfigError


def _capture(tmp_path: Path) -> tuple[str, Path]:
    out = tmp_path / "events.jsonl"
    return f"cat >> '{out}'; echo >> '{out}'", out


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_the_event_arrives_as_json_on_stdin_and_fire_never_waits(tmp_path: Path) -> None:
    out = tmp_path / "slow.jsonl"
    hooks = Hooks(HookSettings({"on_finding": f"sleep 0.5; cat >> '{out}'; echo >> '{out}'"}))
    started = time.monotonic()
    assert hooks.fire("on_finding", {"event": "finding", "finding": {"id": 1, "narration": "VRAM 92 %"}})
    assert hooks.fire("on_finding", {"event": "finding", "finding": {"id": 2}})
    assert time.monotonic() - started < 0.2, "fire only enqueues"
    assert not hooks.fire("on_change", {"event": "change"}), "no on_change hook configured"
    assert hooks.wait_idle(10)
    assert [e["finding"]["id"] for e in _events(out)] == [1, 2]
    assert _events(out)[0]["finding"]["narration"] == "VRAM 92 %"
    assert all(r.ok and r.rc == 0 for r in hooks.results)
    hooks.close()


def test_failures_and_timeouts_are_told_and_journaled(tmp_path: Path) -> None:
    from llmos_tui.journal import Journal

    journal = Journal(tmp_path / "j.db")
    told: list[str] = []
    hooks = Hooks(HookSettings({"on_action": "echo nope >&2; exit 3", "on_change": "sleep 5"}, timeout_s=0.5),
                  journal, notice=told.append)
    hooks.fire("on_action", {"event": "action"})
    hooks.fire("on_change", {"event": "change"})
    assert hooks.wait_idle(10)
    assert "hook on_action failed: exit 3: nope" in told
    assert any(t.startswith("hook on_change failed: killed after") for t in told)
    rows = journal.events("hook")
    assert {r["data"]["hook"] for r in rows} == {"on_action", "on_change"}
    hooks.close()
    journal.close()


def test_the_rate_cap_drops_and_says_so_once(tmp_path: Path) -> None:
    cmd, out = _capture(tmp_path)
    told: list[str] = []
    hooks = Hooks(HookSettings({"on_finding": cmd}, max_per_min=3), notice=told.append)
    sent = [hooks.fire("on_finding", {"n": i}) for i in range(10)]
    assert sent == [True] * 3 + [False] * 7
    assert hooks.wait_idle(10)
    assert [e["n"] for e in _events(out)] == [0, 1, 2]
    assert hooks.dropped == {"on_finding": 7}
    assert len([t for t in told if "dropped" in t]) == 1
    hooks.close()


def test_the_hooks_table_is_checked() -> None:
    settings = HookSettings.from_table({"on_action": "x", "timeout_s": 3, "max_per_min": 5})
    assert settings.commands == {"on_action": "x"} and settings.timeout_s == 3 and settings.max_per_min == 5
    with pytest.raises(ConfigError, match="unknown key 'on_crash'"):
        HookSettings.from_table({"on_crash": "x"})
    with pytest.raises(ConfigError, match="on_action must be a command"):
        HookSettings.from_table({"on_action": ""})


def test_a_doctor_event_reaches_on_finding_with_its_narration(tmp_path: Path) -> None:
    from llmos_tui.doctor import Doctor, PluginManager, Policy
    from llmos_tui.telemetry import Sampler
    from llmos_tui.telemetry.sample import GpuSample, Sample

    class Gpu:
        def collect(self, sample: Sample) -> None:
            sample.gpus = [GpuSample(index=0, xid_events=[79])]

    cmd, out = _capture(tmp_path)
    manager = PluginManager()
    manager.load_all(folders=[], entry_points=False)
    doctor = Doctor(None, Sampler(Gpu(), interval=1.0), None, Policy(), plugins=manager)
    hooks = Hooks(HookSettings({"on_finding": cmd})).attach(doctor, None)
    doctor.sampler.poll_once()
    thread = threading.current_thread()
    doctor.run_once()
    assert hooks._thread is not None and hooks._thread is not thread
    assert hooks.wait_idle(10)
    (event,) = _events(out)
    assert event["event"] == "finding" and event["finding"]["detector"] == "gpu.xid_ecc"
    assert event["finding"]["narration_kind"] == "fact" and "XID 79" in event["finding"]["narration"]
    hooks.close()


def test_on_action_receives_the_repair_of_an_inject_oom(tmp_path: Path, capsys) -> None:
    from llmos_tui.cli.main import main

    cmd, out = _capture(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'[hooks]\non_action = "{cmd}"\n'.replace("'", "'"))
    rc = main(["--config", str(config), "inject", "oom", "--n-threads", "2", "--n-ctx", "1024",
               "--journal", str(tmp_path / "j.sqlite"), "--timeout", "60"])
    text = capsys.readouterr().out
    assert rc == 0, text
    events = _events(out)
    applied = [e for e in events if e["event"] == "action" and e.get("state") == "applied"]
    verified = [e for e in events if e["event"] == "action" and e.get("state") == "verified"]
    assert applied and applied[0]["repair"] == "engine.smaller_batch", events
    assert verified and verified[-1]["finding"]["detector"] == "engine.oom"
    assert verified[-1]["finding"]["narration"].startswith("llama.cpp could not allocate GPU memory")
    settled = [e for e in events if e["event"] == "settled"]
    assert settled and settled[-1]["outcome"] == "repaired"


def test_on_event_runs_for_every_kind_beside_the_hooks_table(tmp_path: Path) -> None:
    """`--on-event CMD` (HookSettings.every): every event kind reaches it, and a kind that also has
    its own [hooks] command runs both; the rate cap counts events, not commands."""
    from llmos_tui.config import load_config

    every_cmd, every_out = _capture(tmp_path)
    own_out = tmp_path / "own.jsonl"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[hooks]\non_action = \"cat >> '{own_out}'; echo >> '{own_out}'\"\nmax_per_min = 2\n")
    config = load_config(cfg, overrides={"on_event": every_cmd})
    hooks = Hooks(HookSettings.from_config(config))
    assert hooks.active
    for kind in ("on_finding", "on_action", "on_change"):
        assert hooks.fire(kind, {"event": kind})
    assert hooks.fire("on_action", {"event": "on_action", "n": 2})
    assert not hooks.fire("on_action", {"event": "on_action", "n": 3}), "the third action in a minute is capped"
    assert hooks.wait_idle(10)
    assert [e["event"] for e in _events(every_out)] == ["on_finding", "on_action", "on_change", "on_action"]
    assert [e["event"] for e in _events(own_out)] == ["on_action", "on_action"]
    hooks.close()
