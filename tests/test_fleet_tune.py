"""Distributed tuning (issue 20): the driver over fake boxes, a real local Ray cluster, and one trial
through a real daemon on the demo model.

The driver's logic (batches, failures, resume, the rolling apply) is tested over the in-process
executors with boxes that replay a recorded surface (the engine is not the point there); the Ray
test runs the same study as Ray tasks on labelled nodes; ``run_box_trial`` is tested against a
real ``llmos-tui serve`` daemon.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from llmos_tui.fleet.replay import SurfaceBox
from llmos_tui.fleet.tune import BoxInfo, FleetTuner, LocalExecutor, SimulatedExecutor, hardware_class
from llmos_tui.journal import Journal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_tuner import KNOBS, load_surface  # noqa: E402

SURFACE = ROOT / "tests" / "data" / "surface_bench_2core.csv"


@pytest.fixture(scope="module")
def surface():
    return load_surface(SURFACE)


def make_box(surface, seed: int = 0, **kwargs) -> SurfaceBox:
    from llmos_tui.tuning.space import Space

    reps = {k: [r["tg"] for r in rows] for k, rows in surface.reps.items() if rows}
    walls = {k: 10.0 for k in surface.reps}
    return SurfaceBox(surface.knobs, reps, surface.failed, walls, Space.from_configs(surface.configs).to_dict(), seed=seed,
                      **kwargs)


def infos(box: SurfaceBox, names: list[str]) -> list[BoxInfo]:
    return [BoxInfo.from_describe(n, box.describe(n, {})) for n in names]


def key(config: dict) -> tuple:
    return tuple(config[k] for k in KNOBS)


# ---- batching ------------------------------------------------------------------------------------
def test_ask_batch_gives_k_different_points_and_lies_about_pending(surface) -> None:
    from llmos_tui.tuning.space import Space
    from llmos_tui.tuning.study import Study

    study = Study(Space.from_configs(surface.configs), seed=3, n_initial=3)  # batches 2 and 3: the GP's
    box = make_box(surface)
    pending: list[dict] = []
    for _ in range(3):
        batch = study.ask_batch(4, pending=pending)
        assert len(batch) == 4
        keys = {key(c) for c in batch}
        assert len(keys) == 4, "a batch proposed the same configuration twice"
        assert not keys & {key(c) for c in pending}, "a batch proposed a configuration already running"
        for config in batch[:3]:  # three finish, one stays running into the next batch
            result = box.trial("a", config, {})
            study.tell(config, result["value"], ok=result["ok"], reason=result["reason"])
        pending = batch[3:]
    assert study.n_trials == 9  # the lies never reached the study itself


def test_k_boxes_run_k_different_trials_one_at_a_time_per_box(surface) -> None:
    box = make_box(surface)
    running: dict[str, int] = {}
    in_flight: dict[str, tuple] = {}
    overlaps: list[set] = []
    worst = {"per_box": 0}
    lock = threading.Lock()

    def trial(name: str, params: dict, spec: dict) -> dict:
        with lock:
            running[name] = running.get(name, 0) + 1
            worst["per_box"] = max(worst["per_box"], running[name])
            in_flight[name] = key(params)
            overlaps.append(set(in_flight.values()) if len(set(in_flight.values())) == len(in_flight) else set())
            assert len(set(in_flight.values())) == len(in_flight), f"two boxes ran the same trial: {in_flight}"
        time.sleep(0.05)
        with lock:
            running[name] -= 1
            del in_flight[name]
        return box.trial(name, params, spec)

    names = ["a", "b", "c", "d"]
    ex = LocalExecutor(infos(box, names), trial)
    try:
        report = FleetTuner(ex, None, trials=8, verify=False, warm_start=False, seed=1).run()[0]  # GP: the liar
    finally:
        ex.close()
    assert len(report.trials) == 8
    assert worst["per_box"] == 1, "a box ran two trials at once"
    assert {t["box"] for t in report.trials} == set(names)
    assert max(len(s) for s in overlaps) == 4, "four boxes never ran four trials at once"


# ---- failures are results ----------------------------------------------------------------------------
def test_a_box_that_errs_or_hangs_gives_failed_trials_not_a_hang(surface) -> None:
    box = make_box(surface)

    def trial(name: str, params: dict, spec: dict) -> dict:
        if name == "dies":
            raise ConnectionError("the box's node died mid-trial")
        if name == "hangs":
            return {**box.trial(name, params, spec), "wall_s": 10_000.0}  # never back before the deadline
        return box.trial(name, params, spec)

    ex = SimulatedExecutor(infos(box, ["ok", "dies", "hangs"]), trial)
    report = FleetTuner(ex, None, strategy="random", trials=12, verify=False, warm_start=False, trial_timeout=30,
                        grace_s=5).run()[0]
    assert len(report.trials) == 12
    died = [t for t in report.trials if t["box"] == "dies"]
    hung = [t for t in report.trials if t["box"] == "hangs"]
    assert died and all(not t["ok"] and "node died mid-trial" in t["reason"] for t in died)
    assert hung and all(t["outcome"] == "timeout" and "gave no result within 35 s" in t["reason"] for t in hung)
    assert any(t["ok"] for t in report.trials if t["box"] == "ok")
    assert report.best is not None  # the study went on with what the healthy box measured
    assert ex.clock < 10_000, "the driver waited for the hung box"


def test_an_unavailable_box_fails_its_trial_and_gets_no_more(surface) -> None:
    box = make_box(surface)
    down = {"b": False}

    def trial(name: str, params: dict, spec: dict) -> dict:
        if name == "b":
            down["b"] = True  # its node leaves while the trial runs
            time.sleep(2.5)
        return box.trial(name, params, spec)

    ex = LocalExecutor(infos(box, ["a", "b"]), trial, alive=lambda name: not (name == "b" and down["b"]))
    try:
        report = FleetTuner(ex, None, strategy="random", trials=6, verify=False, warm_start=False).run()[0]
    finally:
        ex.close()
    on_b = [t for t in report.trials if t["box"] == "b"]
    assert len(on_b) == 1 and not on_b[0]["ok"] and "became unavailable" in on_b[0]["reason"]
    assert len(report.trials) == 6


# ---- the journal: trials with their box, resume, warm start ---------------------------------------------
def test_a_stopped_head_resumes_its_study_from_the_journal(surface, tmp_path: Path) -> None:
    box = make_box(surface)
    path = tmp_path / "head.sqlite"
    journal = Journal(path)
    first: FleetTuner

    def stop_after_four(event: dict) -> None:
        if event["kind"] == "trial" and event["index"] >= 4:
            first.stop()

    ex = SimulatedExecutor(infos(box, ["a", "b"]), box.trial)
    first = FleetTuner(ex, journal, strategy="random", trials=10, verify=False, warm_start=False,
                       on_event=stop_after_four)
    report = first.run()[0]
    sid = report.study_id
    assert report.status == "stopped" and 4 <= len(report.trials) < 10
    journal.close()

    journal = Journal(path)  # the head restarted
    rows = journal.trials(sid)
    assert len(rows) == len(report.trials)
    assert {r["metrics"]["box"] for r in rows} == {"a", "b"}
    assert journal.get_study(sid)["settings"]["fleet"]["hardware_class"] == hardware_class(box.hardware)
    again = FleetTuner(SimulatedExecutor(infos(box, ["a", "b"]), box.trial), journal, strategy="random", trials=10,
                       verify=False, warm_start=False).run()[0]
    assert again.study_id == sid and again.resumed
    assert len(again.trials) == 10 and len(journal.trials(sid)) == 10
    assert journal.get_study(sid)["status"] == "done"
    # a later study of the same class starts warm from every trial journaled for the class
    later = FleetTuner(SimulatedExecutor(infos(box, ["a"]), box.trial), journal, strategy="random", trials=2,
                       verify=False).run()[0]
    assert later.study_id != sid and later.warm_start == 10
    journal.close()


def test_a_study_left_running_by_a_crashed_head_is_resumed(surface, tmp_path: Path) -> None:
    box = make_box(surface)
    journal = Journal(tmp_path / "head.sqlite")
    cls = hardware_class(box.hardware)
    sid = journal.start_study({}, "tg", settings={"fleet": {"hardware_class": cls}})
    config = dict(surface.configs[1])
    journal.record_trial(sid, config, "ok", value=30.0, metrics={"box": "a"})
    report = FleetTuner(SimulatedExecutor(infos(box, ["a"]), box.trial), journal, strategy="random", trials=3,
                        verify=False, warm_start=False).run()[0]
    assert report.study_id == sid and report.resumed and len(report.trials) == 3
    assert report.trials[0]["resumed"] and report.trials[0]["box"] == "a"
    journal.close()


# ---- the rolling apply ---------------------------------------------------------------------------------
def test_rolling_apply_stops_at_the_first_box_that_does_not_verify(surface) -> None:
    box = make_box(surface)
    verified: list[str] = []
    applied: list[tuple[str, dict]] = []

    def verify(name: str, candidate: dict, spec: dict) -> dict:
        verified.append(name)
        good = name != "b"
        return {"significant": good, "estimate": 1.2 if good else 1.0,
                "message": "verified: 1.200x" if good else "not verified: 1.000x"}

    def apply(name: str, changes: dict, reason: str) -> dict:
        applied.append((name, changes))
        assert "verified on" in reason
        return {"ok": True, "state": "applied", "message": "applied"}

    ex = SimulatedExecutor(infos(box, ["a", "b", "c"]), box.trial, verify_fn=verify, apply_fn=apply)
    report = FleetTuner(ex, None, strategy="random", trials=9, warm_start=False).run()[0]
    assert verified == ["a", "b"], "verification went on past the box that failed it"
    assert [n for n, _ in applied] == ["a"]
    assert applied[0][1] == report.best["config"]
    assert [e["state"] for e in report.rollout] == ["applied", "not verified"]
    assert "stopped at box b" in report.message


def test_a_failed_apply_stops_the_roll_too(surface) -> None:
    box = make_box(surface)
    ex = SimulatedExecutor(infos(box, ["a", "b"]), box.trial,
                           verify_fn=lambda n, c, s: {"significant": True, "message": "verified"},
                           apply_fn=lambda n, c, r: {"ok": False, "message": "rolled back: the engine did not load"})
    report = FleetTuner(ex, None, strategy="random", trials=4, warm_start=False).run()[0]
    assert [e["state"] for e in report.rollout] == ["apply failed"]
    assert "stopped at box a: rolled back" in report.message


def test_classes_are_studied_apart(surface) -> None:
    box = make_box(surface)
    boxes = infos(box, ["a", "b", "c"])
    boxes[2].hardware = {**boxes[2].hardware, "gpu_name": "NVIDIA H100", "gpu_count": 1}
    ex = SimulatedExecutor(boxes, box.trial)
    reports = FleetTuner(ex, None, strategy="random", trials=4, verify=False, warm_start=False).run()
    assert len(reports) == 2
    by_class = {r.hardware_class: {t["box"] for t in r.trials} for r in reports}
    assert by_class[hardware_class(boxes[2].hardware)] == {"c"}
    assert by_class[hardware_class(boxes[0].hardware)] == {"a", "b"}


def test_the_benchmark_reports_its_targets() -> None:
    import bench_fleet_tune

    out = bench_fleet_tune.run(seeds=1, budget=12, strategy="random", say=lambda line: None)
    assert {"boxes4_speedup", "misses1", "misses4"} <= set(out)
    assert out["time"] == "simulated" and len(out["targets"]) == 2


# ---- a real local Ray cluster ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("ray")
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "HOME")}
    os.environ["RAY_TMPDIR"] = str(tmp)  # never a shared /tmp/ray: a stale cluster file misleads ray.init
    os.environ["HOME"] = str(tmp)
    import ray
    from ray.cluster_utils import Cluster

    from llmos_tui.fleet.ray_exec import LABEL

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 80 * 2**20,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    nodes = {name: cluster.add_node(num_cpus=1, labels={LABEL: name}, object_store_memory=80 * 2**20)
             for name in ("a", "b")}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_distributed_study_runs_on_both_ray_boxes_and_journals_them(ray_cluster, surface, tmp_path: Path) -> None:
    from llmos_tui.fleet.ray_exec import RayExecutor

    box = make_box(surface, sleep=True, time_scale=0.02)  # a trial: 0.2 s on its box
    executor = RayExecutor(box)
    found = executor.boxes()
    assert [b.name for b in found] == ["a", "b"]  # described by the boxes themselves, over Ray
    journal = Journal(tmp_path / "head.sqlite")
    seen: list[dict] = []
    report = FleetTuner(executor, journal, strategy="random", trials=8, verify=False, warm_start=False,
                        on_event=lambda e: seen.append(e) if e["kind"] == "trial" else None).run()[0]
    assert len(report.trials) == 8
    assert {t["box"] for t in report.trials} == {"a", "b"}
    rows = journal.trials(report.study_id)
    assert len(rows) == 8 and {r["metrics"]["box"] for r in rows} == {"a", "b"}
    assert all(r["metrics"]["ran_on"] == r["metrics"]["box"] for r in rows)  # placed by the node's label
    journal.close()


def test_a_ray_box_that_dies_mid_trial_is_a_failed_trial(ray_cluster, surface) -> None:
    from llmos_tui.fleet.ray_exec import RayExecutor

    cluster, nodes = ray_cluster
    box = make_box(surface, sleep=True, fixed_s=30.0)  # long enough to be killed in the middle
    executor = RayExecutor(box, boxes=infos(box, ["b"]))
    killer = threading.Timer(2.0, lambda: cluster.remove_node(nodes["b"]))
    killer.start()
    started = time.monotonic()
    report = FleetTuner(executor, None, strategy="random", trials=1, verify=False, warm_start=False,
                        trial_timeout=60).run(["b"])[0]
    took = time.monotonic() - started
    killer.join()
    assert len(report.trials) == 1
    trial = report.trials[0]
    assert not trial["ok"] and trial["box"] == "b" and "box b" in trial["reason"], trial
    assert took < 20, f"the driver took {took:.0f} s to see the box die"


# ---- one trial through a real daemon ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    from llmos_tui.serve.settings import ServeSettings
    from tests.conftest import running_daemon

    with running_daemon(tmp_path_factory.mktemp("fleet-daemon-home"), {"n_ctx": 512, "n_threads": 1, "n_threads_batch": 2},
                        ServeSettings(listen="127.0.0.1:0"), name="fleet-test-daemon", doctor=False) as d:
        yield d


def test_run_box_trial_measures_through_the_daemons_change_transaction(daemon) -> None:
    from llmos_tui.engine.supervisor import EngineState
    from llmos_tui.fleet.trials import describe_box, run_box_trial
    from llmos_tui.serve.client import DaemonClient
    from tests.conftest import wait_for

    spec = {"box": "demo", "objective": "tg", "bench": {"n_prompt": 16, "n_gen": 8, "reps": 1}, "timeout_s": 60,
            "study": "std:1", "trial": 1}
    holders: list[str] = []
    serving = daemon.operator.supervisor.params.to_dict()
    unhook = daemon.operator.changes.on_hold(lambda kind, who: holders.append(who), lambda kind, who: None)
    try:
        with DaemonClient(daemon.control_path) as client:
            described = describe_box(client, spec)
            assert described["hardware"]["model_key"].startswith("demo.gguf:")
            assert "n_threads" in [d["name"] for d in described["space"]["dimensions"]]
            # a tg study holds the prompt's knobs at what the box runs, as the tuner on one box does
            assert described["space"]["fixed"]["n_batch"] == serving["n_batch"]
            assert "n_batch" not in [d["name"] for d in described["space"]["dimensions"]]
            result = run_box_trial(client, {"n_threads": 1, "n_batch": 128, "n_ubatch": 64}, spec)
            assert result["ok"], result["reason"]
            assert result["box"] == "demo" and result["value"] > 0 and result["values"]["tg"] == result["value"]
            assert result["engine_params"]["n_threads"] == 1 and result["engine_params"]["n_ubatch"] == 64
            refused = run_box_trial(client, {"n_threads": 1, "no_such_knob": 3}, spec)
            assert not refused["ok"] and refused["outcome"] == "refused" and "no_such_knob" in refused["reason"]
    finally:
        unhook()
    assert any(w.startswith("fleet trial std:1#1") for w in holders), holders  # held (and drained) by the box
    assert wait_for(lambda: daemon.operator.supervisor.state == EngineState.READY, 30)  # serving again
    assert daemon.operator.supervisor.params.to_dict() == serving  # a trial changes nothing that serves


def test_a_box_trial_refuses_when_the_daemon_is_gone(tmp_path: Path) -> None:
    from llmos_tui.fleet.trials import run_box_trial
    from llmos_tui.serve.client import DaemonClient

    with DaemonClient(tmp_path / "nobody.sock", timeout=2) as client:
        result = run_box_trial(client, {"n_threads": 1}, {"box": "gone"})
    assert not result["ok"] and result["box"] == "gone" and "did not answer" in result["reason"]


def test_the_box_verifies_a_winner_itself_under_its_change_transaction(daemon) -> None:
    """The box's own A/B verdict: A what runs there, B the candidate, measured under one hold of its
    engine (paused, then serving again). The measurement is scripted (B 20 % faster) so the verdict is
    known; the hold, the pause and the resume are the daemon's real ones."""
    from llmos_tui.engine.supervisor import EngineState
    from llmos_tui.fleet.trials import verify_on_box
    from llmos_tui.serve.client import DaemonClient
    from llmos_tui.tuning import box_trial
    from llmos_tui.tuning.measure import TrialResult
    from tests.conftest import wait_for

    op = daemon.operator
    running = op.supervisor.params
    seen: list[tuple[int, str]] = []

    def scripted(params, bench, *, timeout):
        seen.append((params.n_threads, op.supervisor.state.value))
        tg = 12.0 if params.n_threads == 2 else 10.0
        return TrialResult(True, "ok", tg_tok_s=tg, rows=[{"tg_tok_s": tg * (1.01 if len(seen) % 3 else 0.99)}])

    spec = {"objective": "tg", "verify_rounds": 4, "study": "std:7"}
    verdict = box_trial.verify(op.supervisor, op.changes, {"n_threads": 2}, spec, measure_fn=scripted)
    assert verdict["significant"], verdict["message"]
    assert verdict["rounds"] == 4 and verdict["candidate"]["n_threads"] == 2
    assert {n for n, _ in seen} == {running.n_threads, 2} and all(state == "paused" for _, state in seen)
    assert wait_for(lambda: op.supervisor.state == EngineState.READY, 30)
    assert op.supervisor.params.to_dict() == running.to_dict()  # verifying applies nothing
    readonly = box_trial.verify(op.supervisor, op.changes, {"n_threads": 2}, spec, readonly=True)
    assert not readonly["significant"] and "read-only" in readonly["message"]
    with DaemonClient(daemon.control_path) as client:  # the same verb over the control socket
        bad = verify_on_box(client, {"no_such_knob": 1}, spec)
    assert not bad["significant"] and "no_such_knob" in bad["message"]


def test_fleet_tune_cli_parses_and_refuses_bad_input() -> None:
    import argparse

    from llmos_tui.cli import fleet_tune

    parser = argparse.ArgumentParser(prog="llmos-tui fleet")
    fleet_tune.add_parser(parser.add_subparsers(dest="fleet_command"))
    args = parser.parse_args(["tune", "--trials", "0", "--boxes", "a,b"])
    assert args.func is fleet_tune.run and args.boxes == "a,b" and args.per_box == 1
    assert fleet_tune.run(args) == 1  # one line on stderr, nothing started
