"""The Prometheus exporter, scraped over real HTTP: GPU series from the replayed trace, the engine
from a real llama.cpp child (demo model), the doctor and the journal; the bind rules; the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from llmos_tui.config import load_config
from llmos_tui.core.wiring import build_core
from llmos_tui.errors import ConfigError
from llmos_tui.exporters.prometheus import is_loopback, parse_listen, start_exporter
from llmos_tui.journal import Journal

TRACE = Path(__file__).parent / "data" / "trace_throttle.jsonl"


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, list] = {"": []}
    for family in text_string_to_metric_families(text):
        samples[""].append(family.name)  # every family, also those without a sample now
        if family.type == "counter":
            samples[""].append(family.name + "_total")
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], metric: str, /, **labels: str) -> float:
    matches = [s.value for s in samples.get(metric, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (metric, labels, samples.get(metric))
    return matches[0]


def test_listen_addresses_default_to_loopback() -> None:
    assert parse_listen(None) == ("127.0.0.1", 9464)
    assert parse_listen("9000") == ("127.0.0.1", 9000)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)  # no host is loopback, never every interface
    assert parse_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    assert is_loopback("127.0.0.1") and not is_loopback("0.0.0.0")
    for bad in ("host:port", "127.0.0.1:70000"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_config_exporter_listen_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[exporter]\nlisten = "127.0.0.1:9555"\n')
    assert load_config(good).exporter_listen == "127.0.0.1:9555"
    bad = tmp_path / "bad.toml"
    bad.write_text('[exporter]\nlisten = "nowhere:port"\n')
    with pytest.raises(ConfigError, match="port must be a number"):
        load_config(bad)


def test_scrape_over_http_gpu_engine_doctor_journal() -> None:
    config = load_config(overrides={"n_threads": 2, "n_threads_batch": 2, "n_ctx": 512})
    # the doctor is wired but runs no passes here (its detectors are not what this test is about)
    op = build_core(config, "replay", replay=str(TRACE), replay_speed=0, endpoint=False, start_doctor=False)
    exporter = None
    try:
        assert op.try_start_engine() is None
        reply = op.chat.send("What is the KV cache?", max_tokens=16)
        reply.wait(30)
        with Journal(config.journal_file) as journal:  # what the doctor and the tuner leave behind
            finding = journal.record_finding("gpu.throttle", "warning", "GPU 0 power capped", {"power": 699})
            action = journal.propose_action("restart", {}, finding_id=finding)
            journal.set_action_state(action, "rejected", note="test")
            study = journal.start_study({"n_batch": [64, 512]}, "gen_tps")
            journal.record_trial(study, {"n_batch": 64}, "ok", value=80.0)
            journal.record_trial(study, {"n_batch": 256}, "ok", value=120.0)
            journal.record_trial(study, {"n_batch": 512}, "oom")
        deadline = time.monotonic() + 10
        while op.sampler.latest is None and time.monotonic() < deadline:
            time.sleep(0.05)
        before = set(REGISTRY._names_to_collectors)
        exporter = start_exporter(op, "127.0.0.1:0")
        assert set(REGISTRY._names_to_collectors) == before  # its own registry: the global one is untouched
        samples = scrape(exporter.url)
        gpu = {"gpu": "0", "uuid": "GPU-8d3b6f0e-7c1a-4e2b-9f35-1a2b3c4d5e6f", "name": "NVIDIA H100 80GB HBM3"}
        assert value(samples, "llmos_gpu_memory_total_bytes", **gpu) == 85520809984
        # a replay never looks live: the trace's series say replay="true" and that the trace is synthetic
        assert value(samples, "llmos_gpu_power_watts", replay="true", synthetic="true", **gpu) >= 0
        assert all(s.labels.get("replay") == "true" and s.labels.get("synthetic") == "true"
                   for name, rows in samples.items() if name.startswith(("llmos_gpu_", "llmos_host_")) for s in rows)
        assert value(samples, "llmos_gpu_power_limit_watts", **gpu) == 700.0
        assert value(samples, "llmos_gpu_sm_clock_max_hertz", **gpu) == 1980e6
        assert 0 <= value(samples, "llmos_gpu_utilization_ratio", **gpu) <= 1
        reasons = {s.labels["reason"] for s in samples["llmos_gpu_clock_event_reason"]}
        assert {"power cap", "SW thermal slowdown", "HW thermal slowdown"} <= reasons
        assert value(samples, "llmos_gpu_ecc_errors_total", type="uncorrected", scope="volatile", **gpu) == 0
        assert value(samples, "llmos_telemetry_info", source="replay") == 1
        model = op.supervisor.model_info.name
        assert value(samples, "llmos_engine_state", model=model, state="ready") == 1
        assert value(samples, "llmos_engine_state", model=model, state="crashed") == 0
        assert value(samples, "llmos_engine_requests_total", model=model) == 1
        assert value(samples, "llmos_engine_generation_tokens_per_second", model=model) > 0
        assert 0 < value(samples, "llmos_engine_time_to_first_token_seconds", model=model) < 10
        assert value(samples, "llmos_engine_context_size_tokens", model=model) == 512
        # the replay doctor is wired but ran no pass: nothing is open, and its series is labelled replay too
        assert value(samples, "llmos_doctor_findings_open", severity="critical", replay="true", synthetic="true") == 0
        assert value(samples, "llmos_engine_state", model=model, state="paused") == 0  # the supervisor's states
        assert value(samples, "llmos_doctor_actions", outcome="rejected") == 1
        assert value(samples, "llmos_doctor_findings_total", severity="warning") == 1
        assert value(samples, "llmos_tuner_trials_total", outcome="oom") == 1
        assert value(samples, "llmos_tuner_best_value", study=f"std:{study}", objective="gen_tps") == 120.0
        assert value(samples, "llmos_tuner_best_param", study=f"std:{study}", param="n_batch") == 256
        assert value(samples, "llmos_exporter_scrape_errors_total") == 0
        examples = Path(__file__).parent.parent / "examples"
        shipped = (examples / "grafana-dashboard.json").read_text() + (examples / "prometheus.yml").read_text()
        named = set(re.findall(r"llmos_[a-z_]+", shipped))
        missing = sorted(n for n in named if n not in samples[""] and n not in samples)
        assert named and not missing, missing  # the example dashboard and alerts use real series
    finally:
        if exporter is not None:
            exporter.close()
        op.close()


def test_cli_exporter_serves_until_its_duration(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmos_tui.cli", "exporter", "--listen", "127.0.0.1:0", "--replay", str(TRACE),
         "--replay-speed", "0", "--duration", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"serving (http://\S+/metrics)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(match.group(1))
            if "llmos_gpu_power_watts" in samples or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert value(samples, "llmos_gpu_power_limit_watts", gpu="0", replay="true") == 700.0
        assert "llmos_engine_state" not in samples  # no engine of its own: it says nothing about one
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    bad = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "exporter", "--listen", "here:there"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "port must be a number" in bad.stderr


@pytest.mark.parametrize("argv, says", [
    (["--duration", "soon"], "--duration must be a number"),
    (["--duration", "0"], "--duration must be above 0"),
    (["--replay", "/no/such/trace.jsonl"], "--replay: no such file"),
    (["--replay", str(TRACE), "--replay-speed", "fast"], "--replay-speed must be a number"),
    (["--replay", str(TRACE), "--replay-speed", "-1"], "--replay-speed must be at least 0"),
    (["--replay-speed", "2"], "--replay-speed needs --replay FILE"),
])
def test_cli_exporter_checks_every_value_before_serving(argv, says) -> None:
    proc = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "exporter", "--listen", "127.0.0.1:0", *argv],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert "serving" not in proc.stdout


def test_attach_exporter_from_the_config_and_a_taken_port_is_one_problem() -> None:
    from llmos_tui.exporters.prometheus import attach_exporter

    config = load_config()
    config.exporter_listen = "127.0.0.1:0"
    op = build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)
    try:
        exporter = attach_exporter(op)
        assert exporter is not None and "llmos_engine_state" in scrape(exporter.url)
        taken = attach_exporter(op, f"127.0.0.1:{exporter.port}")
        assert taken is None and any(p.startswith("exporter disabled: exporter cannot listen") for p in op.problems)
    finally:
        op.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(exporter.url, timeout=2)  # closed with the operator


def test_xid_events_are_counted_between_scrapes() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from llmos_tui.exporters.prometheus import LlmosCollector
    from llmos_tui.telemetry.sample import GpuSample, Sample

    class Sampler:
        latest = None
        listeners: list = []

        def subscribe(self, callback):
            self.listeners.append(callback)
            return lambda: self.listeners.remove(callback)

    class Op:
        sampler = Sampler()
        supervisor = doctor = config = replay = None

    collector = LlmosCollector(Op(), engine=False)
    gpu = dict(index=1, uuid="GPU-x", name="Test GPU")
    for xids in ([79], [], [79, 48]):
        sample = Sample(ts=1.0, gpus=[GpuSample(**gpu, xid_events=xids, xid_last=(xids or [None])[-1])])
        Op.sampler.latest = sample
        for listener in Op.sampler.listeners:
            listener(sample)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'llmos_gpu_xid_errors_total{gpu="1",name="Test GPU",uuid="GPU-x",xid="79"} 2.0' in text
    assert 'llmos_gpu_xid_errors_total{gpu="1",name="Test GPU",uuid="GPU-x",xid="48"} 1.0' in text
    assert 'llmos_gpu_utilization_ratio{' not in text.split("# TYPE llmos_gpu_utilization_ratio gauge")[1].split("#")[0]
    collector.close()
    assert Op.sampler.listeners == []


# ---- replayed data never fires the shipped alert rules ---------------------------------------
_SELECTOR = re.compile(r"(llmos_[a-z_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _matches(selector_labels: str, labels: dict[str, str]) -> bool:
    """Prometheus label matching (=, !=, =~, !~; a missing label is the empty string)."""
    for name, op, want in _MATCHER.findall(selector_labels or ""):
        have = labels.get(name, "")
        ok = {"=": have == want, "!=": have != want,
              "=~": re.fullmatch(want, have) is not None, "!~": re.fullmatch(want, have) is None}[op]
        if not ok:
            return False
    return True


def _shipped_alert_selectors() -> list[tuple[str, str]]:
    rules = (Path(__file__).parent.parent / "examples" / "prometheus.yml").read_text()
    exprs = [line.split("expr:", 1)[1] for line in rules.splitlines() if "expr:" in line]
    return [(m.group(1), m.group(2) or "") for e in exprs for m in _SELECTOR.finditer(e)]


def _collect(replay: dict | None) -> dict[str, list]:
    from prometheus_client import CollectorRegistry, generate_latest

    from llmos_tui.exporters.prometheus import LlmosCollector
    from llmos_tui.telemetry.sample import GpuSample, HostSample, Sample

    class Sampler:
        latest = Sample(ts=1.0, gpus=[GpuSample(index=0, uuid="GPU-x", name="Test GPU", power=300.0,
                                                 clock_reasons=4, xid_last=79)],  # 4: power cap
                        host=HostSample(cpu_percent=50.0))

        def subscribe(self, callback):
            return lambda: None

    class Finding:
        severity, id, detector = "critical", 1, "gpu.xid_ecc"
        narrated = "fact: GPU 0 reported XID 79 (fallen off the bus)."

    class Doctor:
        kill_switch = busy = False
        last_canary = None

        def findings(self, *, open_only=False):
            return [Finding()]

    class Op:
        sampler, supervisor, doctor, config = Sampler(), None, Doctor(), None

    Op.replay = replay
    collector = LlmosCollector(Op(), engine=False)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    collector.close()
    return samples


def test_a_replay_is_labelled_and_the_shipped_alert_rules_ignore_it() -> None:
    live = _collect(None)
    replayed = _collect({"path": "trace.jsonl", "synthetic": True})
    selectors = _shipped_alert_selectors()
    assert ("llmos_gpu_throttled", 'replay!="true"') in selectors
    fired_live = {name for name, labels in selectors for s in live.get(name, []) if _matches(labels, s.labels)}
    fired_replay = {name for name, labels in selectors for s in replayed.get(name, []) if _matches(labels, s.labels)}
    # the same GPU and doctor state: live it fires the GPU and doctor rules, replayed it fires none of them
    assert {"llmos_gpu_throttled", "llmos_doctor_findings_open"} <= fired_live
    assert fired_replay == set()
    assert value(replayed, "llmos_gpu_throttled", replay="true", synthetic="true") == 1
    assert value(replayed, "llmos_doctor_findings_open", severity="critical", replay="true") == 1
    assert value(replayed, "llmos_telemetry_info", source="replay", synthetic="true") == 1
    # the doctor's narration of its worst open finding, as one info metric (no dimension labels)
    assert value(live, "llmos_doctor_narration_info", kind="fact", finding="1",
                 text="GPU 0 reported XID 79 (fallen off the bus).") == 1
    assert value(replayed, "llmos_doctor_narration_info", kind="fact", replay="true") == 1
    assert all("replay" not in s.labels for rows in live.values() for s in rows)
    grafana = (Path(__file__).parent.parent / "examples" / "grafana-dashboard.json").read_text()
    gpu_or_doctor = re.findall(r"(llmos_(?:gpu|host|doctor_findings_open)[a-z_]*)(\{[^}]*\})?", grafana)
    assert gpu_or_doctor and all('replay!=\\"true\\"' in labels for _, labels in gpu_or_doctor)
