"""Engine parameters and the config file: every bad value is named in the error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmos_tui.config import load_config
from llmos_tui.engine.params import EngineParams, cpu_has_amx, resolve_repack
from llmos_tui.errors import ConfigError
from llmos_tui.paths import DEMO_MODEL


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"n_ctx": "lots"}, "n_ctx must be an integer, got 'lots'"),
        ({"n_ctx": 8}, "n_ctx must be 0"),
        ({"n_batch": 0}, "n_batch must be"),
        ({"n_batch": 64, "n_ubatch": 128}, "n_ubatch (128) must not exceed n_batch (64)"),
        ({"n_gpu_layers": -2}, "n_gpu_layers must be"),
        ({"flash_attn": "maybe"}, "flash_attn must be one of auto, on, off, got 'maybe'"),
        ({"type_k": "q9_9"}, "type_k must be one of"),
        ({"type_v": "q8_0", "flash_attn": "off"}, "needs flash_attn"),
        ({"n_threads": 0}, "n_threads must be"),
        ({"colour": "blue"}, "unknown engine parameter 'colour'"),
    ],
)
def test_bad_params_name_the_value(values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        EngineParams.from_mapping(values)
    assert fragment in str(info.value)


def test_strings_from_the_command_line_are_coerced() -> None:
    p = EngineParams.from_mapping({"n_ctx": "4096", "flash_attn": "ON", "use_mmap": "false", "type_k": "Q8_0"})
    assert (p.n_ctx, p.flash_attn, p.use_mmap, p.type_k) == (4096, "on", False, "q8_0")


def test_config_file_defaults_to_demo_model_and_applies_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[engine]\nn_ctx = 512\n[chat]\ntemperature = 0.2\nsystem_prompt = "Be brief."\n'
                   '[telemetry]\ninterval = 2.5\n')
    config = load_config(cfg, overrides={"n_batch": "256", "n_ubatch": "128"})
    assert config.engine.model_path == str(DEMO_MODEL) and config.uses_demo_model
    assert (config.engine.n_ctx, config.engine.n_batch, config.engine.n_ubatch) == (512, 256, 128)
    assert config.chat.temperature == 0.2 and config.chat.system_prompt == "Be brief."
    assert config.telemetry_interval == 2.5


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[engine\n", "not valid TOML"),
        ("[engine]\nn_ctx = 'big'\n", "[engine] n_ctx must be an integer, got 'big'"),
        ("[chat]\ntemperature = 9\n", "chat.temperature must be between"),
        ("[chat]\nmood = 'happy'\n", "unknown key chat.mood"),
        ("[telemetry]\ninterval = 0\n", "telemetry.interval must be between"),
        ("engine = 3\n", "[engine] must be a table"),
        ("[rollups]\nkeep_10s_hours = 0\n", "rollups.keep_10s_hours must be between"),
        ("[rollups]\nkeep_1min_days = 'long'\n", "rollups.keep_1min_days must be a number, got 'long'"),
        ("[rollups]\nmax_mb = 5\n", "unknown key rollups.max_mb (known: keep_10s_hours, keep_1min_days, "
                                    "max_journal_mb)"),
        ("[hooks]\non_crash = 'x'\n", "[hooks] unknown key 'on_crash'"),
        ("[hooks]\non_action = 3\n", "[hooks] on_action must be a command string, got 3"),
        ("[hooks]\non_action = ' '\n", "[hooks] on_action must be a command string"),
        ("[hooks]\ntimeout_s = 0\n", "[hooks] timeout_s must be a number of seconds above 0"),
        ("[hooks]\nmax_per_min = 2.5\n", "[hooks] max_per_min must be a whole number"),
        ("hooks = 'x'\n", "[hooks] must be a table"),
        ("[engine]\nmodel_path = 7\n", "model_path must be a file path (a string), got 7"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert fragment in str(info.value) and str(cfg) in str(info.value)


def test_a_config_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(b"[engine]\nn_ctx = \xfc\xfe\x00\x01\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(cfg)


def test_config_check_knows_the_sections_that_are_read_and_checks_serve(tmp_path: Path, llmos_home: Path) -> None:
    """--check called [hooks], [rollups] and [serve] unknown ("ignored") though they are read, and
    passed [tuning] (read by nothing) silently; [serve]'s values were never checked before `serve`."""
    import subprocess
    import sys

    cfg = tmp_path / "config.toml"

    def check(text: str) -> subprocess.CompletedProcess:
        cfg.write_text(text)
        return subprocess.run([sys.executable, "-m", "llmos_tui.cli", "--config", str(cfg), "config", "--check"],
                              capture_output=True, text=True, timeout=60)

    good = check('[hooks]\non_finding = "true"\n[rollups]\nkeep_10s_hours = 2\n[serve]\nlisten = "127.0.0.1:8181"\n')
    assert good.returncode == 0 and "unknown section" not in good.stdout + good.stderr, good.stdout + good.stderr
    odd = check("[tuning]\ntrials = -1\n")
    assert odd.returncode == 0 and "unknown section [tuning] (ignored)" in odd.stdout + odd.stderr
    bad = check('[serve]\nlisten = "0.0.0.0:99999"\n')
    assert bad.returncode == 1 and str(cfg) in bad.stderr and "serve.listen" in bad.stderr, bad.stderr
    assert check("[serve]\nbogus = 1\n").returncode == 1


def test_rollups_and_hooks_sections_are_read(tmp_path: Path) -> None:
    from llmos_tui.core.hooks import HookSettings

    cfg = tmp_path / "config.toml"
    cfg.write_text("[rollups]\nkeep_10s_hours = 6\nkeep_1min_days = 2.5\nmax_journal_mb = 32\n"
                   "[hooks]\non_action = 'cat'\ntimeout_s = 3\n")
    config = load_config(cfg, overrides={"on_event": "logger -t llmos"})
    assert config.rollups.keep() == {10: (6 * 3600.0, 6 * 360 + 60), 60: (2.5 * 86400, 3600 + 60)}
    assert config.rollups.max_bytes == 32 * 1024 * 1024
    default = load_config(tmp_path / "none.toml").rollups
    assert default.keep_10s_s == 48 * 3600 and default.keep_1min_s == 30 * 86400
    hooks = HookSettings.from_config(config)
    assert hooks.commands == {"on_action": "cat"} and hooks.timeout_s == 3 and hooks.every == "logger -t llmos"
    assert hooks.commands_for("on_action") == ["cat", "logger -t llmos"]
    assert hooks.commands_for("on_finding") == ["logger -t llmos"]
    with pytest.raises(ConfigError, match="--on-event needs a command"):
        load_config(cfg, overrides={"on_event": "  "})


def test_telemetry_history_keeps_one_row_per_period(tmp_path: Path) -> None:
    from llmos_tui.journal import Journal, JournalWriter
    from llmos_tui.core.journaling import TelemetryHistory
    from llmos_tui.telemetry.sample import HostSample, Sample

    writer = JournalWriter(tmp_path / "j.sqlite")
    history = TelemetryHistory(writer, period=60)
    start = time.time() - 3600
    for second in range(0, 181):
        history(Sample(ts=start + second, host=HostSample(cpu_percent=float(second % 2) * 100)))
    writer.flush()
    writer.close()
    rows = Journal(tmp_path / "j.sqlite").telemetry()
    assert len(rows) == 3
    assert all(abs(r["data"]["host.cpu"] - 50.0) < 2 for r in rows), rows


def test_options_before_or_after_the_subcommand_both_count(tmp_path: Path) -> None:
    from llmos_tui.cli import build_parser, config_from_args

    parser = build_parser()
    before = config_from_args(parser.parse_args(["--n-ctx", "512", "info"]))
    after = config_from_args(parser.parse_args(["info", "--n-ctx", "256"]))
    doctor = config_from_args(parser.parse_args(["--n-ctx", "384", "doctor"]))
    assert (before.engine.n_ctx, after.engine.n_ctx, doctor.engine.n_ctx) == (512, 256, 384)
    with pytest.raises(ConfigError, match="config file not found"):
        config_from_args(parser.parse_args(["--config", str(tmp_path / "absent.toml"), "chat"]))


def test_a_refused_send_leaves_no_message_and_a_reset_drops_the_streaming_reply(supervisor) -> None:
    from llmos_tui.core.chat import ChatSession
    from llmos_tui.errors import EngineError

    chat = ChatSession(supervisor)
    supervisor.inject("slow", ms=30)
    reply = chat.send("Tell me about GPUs.")
    with pytest.raises(EngineError):
        chat.send("and another one")  # refused: one request at a time
    assert [m.content for m in chat.messages] == ["Tell me about GPUs."]
    supervisor.cancel()
    chat.reset()
    reply.wait(10)
    time.sleep(0.1)
    assert chat.messages == [], "the cancelled reply of the old conversation stays out of the new one"


def test_repack_auto_is_off_on_an_amx_cpu_and_on_elsewhere(tmp_path: Path) -> None:
    amx = tmp_path / "cpuinfo-amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile amx_int8\n")
    plain_cpu = tmp_path / "cpuinfo-epyc"
    plain_cpu.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_amx(str(amx)) and not cpu_has_amx(str(plain_cpu))
    assert not cpu_has_amx(str(tmp_path / "missing")), "an unreadable cpuinfo is no AMX"
    on, why = resolve_repack("auto", amx=True)
    assert on is False and "AMX" in why
    assert resolve_repack("auto", amx=False)[0] is True
    assert resolve_repack("on", amx=True)[0] is True, "the operator may force it"
    assert resolve_repack("off", amx=False)[0] is False
    assert EngineParams.from_mapping({"repack": "off"}).repack == "off"
    assert EngineParams.from_mapping({"repack": False}).repack == "off"
    with pytest.raises(ConfigError, match="repack must be one of"):
        EngineParams.from_mapping({"repack": "sometimes"})
