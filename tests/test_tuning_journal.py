"""Studies and trials in the journal (journal.tuning, the Studies repository), the v4 migration, and the objectives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llmos_tui.errors import ConfigError, JournalError
from llmos_tui.journal import Journal, migrations
from llmos_tui.tuning.objective import make_objective, parse_weights
from llmos_tui.tuning.warmstart import Fingerprint, build, similarity


def test_study_life_cycle_and_trials(tmp_path: Path):
    with Journal(tmp_path / "j.db") as j:
        sid = j.start_study({"dimensions": []}, "tg", name="s", model_path="/m/a.gguf", model_key="a.gguf:10",
                            build="0.3.36", machine={"cpu_count": 2, "gpu_name": ""}, settings={"trials": 4})
        assert j.get_study(sid)["status"] == "running"
        ok = j.record_trial(sid, {"n_threads": 2}, "ok", value=12.5, metrics={"tg_tok_s": 12.5})
        bad = j.record_trial(sid, {"type_k": "q8_0"}, "refused", reason="does not divide n_embd_head_k=40")
        j.record_trial(sid, {"n_threads": 2}, "ok", value=12.0, kind="verify")
        with pytest.raises(JournalError, match="outcome"):
            j.record_trial(sid, {}, "nope")
        assert [t["id"] for t in j.trials(sid, kind="trial")] == [ok, bad]
        assert j.show(f"trl:{bad}")["reason"].startswith("does not divide")
        j.end_study(sid, status="stopped")
        assert j.get_study(sid)["status"] == "stopped"
        assert j.resume_study(sid)["status"] == "running"
        j.end_study(sid, result={"best": 1})
        study = j.get_study(sid)
        assert study["status"] == "done" and study["result"] == {"best": 1}
        history = j.tuning_history()
        assert {h["id"] for h in history} == {ok, bad}  # verification rounds are not search trials
        assert history[0]["model_key"] == "a.gguf:10" and history[0]["machine"]["cpu_count"] == 2
        entry = [e for e in j.timeline(limit=10) if e.id == f"trl:{bad}"][0]
        assert "does not divide" in entry.summary


def test_a_v3_journal_gains_the_tuning_columns(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    migrations.migrate(conn, target=3)
    conn.execute("INSERT INTO studies (started, ended, name, objective, space) VALUES (1, 2, 'old', 'tg', '{}')")
    conn.execute("INSERT INTO studies (started, name, objective, space) VALUES (3, 'cut', 'tg', '{}')")
    conn.execute("INSERT INTO trials (study_id, ts, params, metrics, outcome) VALUES (1, 1.5, '{}', '{}', 'ok')")
    conn.commit()
    conn.close()
    with Journal(path) as j:
        assert j.schema_version == migrations.SCHEMA_VERSION
        assert [s["status"] for s in j.studies()] == ["stopped", "done"]  # the cut one was never ended
        assert j.trials(1)[0]["kind"] == "trial" and j.trials(1)[0]["reason"] == ""


def test_traffic_objective_weights_come_from_the_chats(tmp_path: Path):
    with Journal(tmp_path / "j.db") as j:
        assert make_objective("traffic", traffic=j.chat_traffic()).note.startswith("no chat traffic")
        chat = j.create_chat("c")
        j.add_message(chat, "user", "hi")
        j.add_message(chat, "assistant", "hello", metrics={"prompt_tokens": 400, "prompt_eval_tokens": 300,
                                                           "gen_tokens": 100})
        traffic = j.chat_traffic()
    assert traffic == {"replies": 1, "prompt_tokens": 300, "gen_tokens": 100}
    obj = make_objective("traffic", traffic=traffic)
    assert obj.weights == {"pp": 0.75, "tg": 0.25}
    # a request of 3 prompt tokens per generated one at pp 300 tok/s, tg 10 tok/s: 4 tokens in 0.11 s
    assert obj.of({"pp_tok_s": 300.0, "tg_tok_s": 10.0}) == pytest.approx(1 / (0.75 / 300 + 0.25 / 10))
    ttft = make_objective("ttft")
    assert not ttft.maximize and ttft.speedup(50.0, 100.0) == 2.0
    with pytest.raises(ConfigError):
        parse_weights("pp=1,xx=2")
    with pytest.raises(ConfigError):
        make_objective("speed")


class _Dim:
    def __init__(self, name, values):
        self.name, self.kind, self.values = name, "int", values


class _Space:
    dimensions = [_Dim("n_threads", [1, 2]), _Dim("n_batch", [64, 128])]

    def allowed(self, config):
        return None


def test_warm_start_exact_similar_and_bad():
    fp = Fingerprint("a.gguf:10", "/m/a.gguf", "0.3.36", {"cpu_count": 2, "gpu_name": ""},
                     {"n_params": 1_000_000, "quantization": "F16", "n_layer": 4, "size_bytes": 10})
    machine = {"cpu_count": 2, "gpu_name": ""}
    history = [
        {"id": 1, "study_id": 1, "outcome": "ok", "params": {"n_threads": 2, "n_batch": 64}, "value": 10.0,
         "metrics": {"tg_tok_s": 10.0}, "model_key": "a.gguf:10", "build": "0.3.36", "machine": machine,
         "settings": {}},
        {"id": 2, "study_id": 1, "outcome": "refused", "params": {"n_threads": 1, "n_batch": 64}, "value": None,
         "metrics": {}, "reason": "K cache type q8_0 ... does not divide", "model_key": "a.gguf:10",
         "build": "0.3.36", "machine": machine, "settings": {}},
        {"id": 3, "study_id": 2, "outcome": "ok", "params": {"n_threads": 1, "n_batch": 128}, "value": 50.0,
         "metrics": {"tg_tok_s": 50.0}, "model_key": "b.gguf:12", "build": "0.3.36", "machine": machine,
         "settings": {"features": {"n_params": 1_200_000, "quantization": "F16", "n_layer": 4, "size_bytes": 12}}},
        {"id": 4, "study_id": 3, "outcome": "ok", "params": {"n_threads": 2, "n_batch": 128}, "value": 900.0,
         "metrics": {"tg_tok_s": 900.0}, "model_key": "z.gguf:9", "build": "0.3.36",
         "machine": {"cpu_count": 64, "gpu_name": "H200", "vram_total_mib": 143000},
         "settings": {"features": {"n_params": 70_000_000_000, "quantization": "Q4_K", "n_layer": 80,
                                   "size_bytes": 40_000_000_000}}},
    ]
    ws = build(history, fp, _Space(), make_objective("tg"))
    exact = [p for p in ws.told if p.kind == "exact"]
    assert [(p.config, p.value) for p in exact] == [({"n_threads": 2, "n_batch": 64}, 10.0)]
    assert [p.config for p in ws.told if not p.ok] == [{"n_threads": 1, "n_batch": 64}]
    assert [p.config for p in ws.seeds] == [{"n_threads": 1, "n_batch": 128}]  # the near model, not the far one
    assert "b.gguf:12" in ws.seeds[0].origin and "similarity" in ws.seeds[0].origin
    assert similarity(fp, history[3]["settings"]["features"], history[3]["machine"]) < 0.35
    assert "std:1" in ws.summary()
