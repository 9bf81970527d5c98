"""The supervisor on real llama.cpp with the demo model: streaming, metrics, cancel, crashes, bad input."""

from __future__ import annotations

import signal
import time

import pytest

from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineState, Supervisor
from llmos_tui.errors import EngineError, ModelError

ASK = [{"role": "user", "content": "What is the KV cache?"}]


def test_streams_real_tokens_with_llama_cpp_metrics(supervisor: Supervisor) -> None:
    assert supervisor.state is EngineState.READY
    assert supervisor.model_info is not None and supervisor.model_info.is_demo
    supervisor.inject("slow", ms=6)  # tokens slower than the worker's coalescing interval
    reply = supervisor.chat(ASK, max_tokens=120, temperature=0.0)
    pieces = list(reply)
    assert reply.status == "done"
    assert len(pieces) >= reply.metrics["gen_tokens"] // 2, "the reply arrives token by token, not in one block"
    text = "".join(pieces)
    assert text == reply.text and len(text.split()) >= 5
    m = reply.metrics
    assert m["prompt_tokens"] >= m["prompt_eval_tokens"] > 0
    assert m["gen_tokens"] > 0 and m["gen_tps"] > 0 and m["prompt_tps"] > 0
    assert 0 < m["ttft_ms"] < m["wall_ms"]
    assert m["ctx_used"] == m["prompt_tokens"] + m["gen_tokens"] or m["ctx_used"] > m["prompt_tokens"]
    stats = supervisor.stats()
    assert stats["requests"] == 1 and stats["last_gen_tps"] == m["gen_tps"]
    assert stats["pid"] and stats["state"] == "ready"


def test_events_and_logs_are_kept(demo_params: EngineParams) -> None:
    sup = Supervisor(demo_params)
    seen: list[str] = []
    sup.subscribe(lambda e: seen.append(e.kind))
    try:
        sup.start()
        assert "loaded" in seen and "progress" in seen
        assert any("llama" in line.text for line in sup.logs()), "llama.cpp's log lines are captured"
    finally:
        sup.stop()
    assert sup.state is EngineState.STOPPED and sup.pid is None


def test_cancel_stops_a_reply_mid_stream(supervisor: Supervisor) -> None:
    supervisor.inject("slow", ms=20)
    reply = supervisor.chat([{"role": "user", "content": "Tell me about GPUs."}], max_tokens=400, temperature=1.0)
    first = next(iter(reply))
    assert first
    supervisor.cancel()
    reply.wait(10)
    assert reply.status == "cancelled"
    assert reply.metrics["gen_tokens"] < 400
    assert supervisor.state is EngineState.READY
    supervisor.inject("slow", ms=0)
    again = supervisor.chat(ASK, max_tokens=20).wait(10)
    assert again.status == "done"


def test_kill_mid_reply_marks_it_interrupted_and_restart_recovers(supervisor: Supervisor) -> None:
    crashes = []
    supervisor.subscribe(lambda e: crashes.append(e) if e.kind == "crashed" else None)
    supervisor.inject("slow", ms=20)
    reply = supervisor.chat(ASK, max_tokens=400, temperature=1.0)
    next(iter(reply))
    supervisor.kill(signal.SIGKILL)
    reply.wait(10)
    assert reply.status == "interrupted"
    assert "SIGKILL" in (reply.error or "")
    deadline = time.monotonic() + 5
    while supervisor.state is not EngineState.CRASHED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert supervisor.state is EngineState.CRASHED
    assert crashes and crashes[0].data["signal"] == "SIGKILL"
    with pytest.raises(EngineError, match="crashed"):
        supervisor.chat(ASK)
    supervisor.restart(reason="test")
    assert supervisor.state is EngineState.READY and supervisor.restarts == 1
    assert supervisor.chat(ASK, max_tokens=10).wait(10).status == "done"


def test_injected_oom_aborts_like_ggml_and_leaves_log_lines(supervisor: Supervisor) -> None:
    supervisor.inject("oom")
    deadline = time.monotonic() + 5
    while supervisor.state is not EngineState.CRASHED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert supervisor.last_exit is not None and supervisor.last_exit["signal"] == "SIGABRT"
    assert any("out of memory" in line for line in supervisor.last_exit["last_logs"])


def test_prompt_larger_than_context_is_an_error_not_a_crash(supervisor: Supervisor) -> None:
    reply = supervisor.chat([{"role": "user", "content": "token " * 3000}], max_tokens=10).wait(10)
    assert reply.status == "error" and "context window" in (reply.error or "")
    assert supervisor.state is EngineState.READY


def test_reset_context_forgets_the_conversation(supervisor: Supervisor) -> None:
    supervisor.chat(ASK, max_tokens=20).wait(10)
    assert supervisor.ctx_used > 0
    supervisor.reset_context()
    assert supervisor.ctx_used == 0
    assert supervisor.chat(ASK, max_tokens=10).wait(10).metrics["prompt_eval_tokens"] > 0


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "model not found"),
        ("not_gguf", "not a GGUF file"),
        ("truncated", "truncated"),
        ("refused", "llama.cpp refused"),
    ],
)
def test_bad_models_give_one_clear_line(bad_models, demo_params: EngineParams, kind: str, message: str) -> None:
    sup = Supervisor(demo_params.replace(model_path=str(bad_models[kind])))
    with pytest.raises(ModelError, match=message) as info:
        sup.start(timeout=30)
    assert "\n" not in str(info.value)
    assert sup.state is EngineState.FAILED
    sup.stop()
    assert sup.pid is None


def test_a_failed_load_does_not_lose_the_running_engine_state(bad_models, supervisor: Supervisor) -> None:
    good = supervisor.params
    with pytest.raises(ModelError):
        supervisor.restart(good.replace(model_path=str(bad_models["refused"])))
    assert supervisor.state is EngineState.FAILED
    supervisor.restart(good)
    assert supervisor.chat(ASK, max_tokens=5).wait(10).status == "done"


def test_stop_during_a_reply_ends_it_at_once_as_interrupted(supervisor: Supervisor) -> None:
    supervisor.inject("slow", ms=30)
    reply = supervisor.chat(ASK, max_tokens=400, temperature=1.0)
    next(iter(reply))
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 4, "the reply is cancelled, not waited for until the kill"
    assert reply.wait(1).status in ("cancelled", "interrupted")  # cancelled first, if the child still answers
    assert supervisor.state is EngineState.STOPPED and supervisor.pid is None


def test_a_second_request_while_generating_is_refused(supervisor: Supervisor) -> None:
    supervisor.inject("slow", ms=30)
    first = supervisor.chat(ASK, max_tokens=100)
    with pytest.raises(EngineError, match="generating"):
        supervisor.chat(ASK, max_tokens=5)
    supervisor.cancel()
    assert first.wait(10).status == "cancelled"


def test_two_starts_at_once_leave_exactly_one_child(demo_params: EngineParams) -> None:
    import threading

    import psutil

    sup = Supervisor(demo_params)
    barrier = threading.Barrier(2)

    def start() -> None:
        barrier.wait()
        try:
            sup.start()
        except EngineError:
            pass  # the other start may stop this one's child while it loads: said, not hidden

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    workers = [p for p in psutil.Process().children() if "llmos_tui.engine.worker" in " ".join(p.cmdline())]
    assert len(workers) == 1 and workers[0].pid == sup.pid
    sup.stop()
    assert not [p for p in psutil.Process().children() if p.is_running() and p.status() != "zombie"
                and "llmos_tui.engine.worker" in " ".join(p.cmdline())]


def test_a_load_timeout_is_a_failed_load_not_a_crash(demo_params: EngineParams) -> None:
    sup = Supervisor(demo_params)
    crashes = []
    sup.subscribe(lambda e: crashes.append(e) if e.kind == "crashed" else None)
    with pytest.raises(EngineError, match="timed out"):
        sup.start(timeout=0.01)
    time.sleep(0.3)
    assert sup.state is EngineState.FAILED and not crashes
    sup.stop()


STRICT_TEMPLATE = (  # Gemma 2's rules (Mistral's and Llama 2's are alike): no system turn, turns must alternate
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")


def _with_template(demo_params: EngineParams, tmp_path, template: str) -> EngineParams:
    import subprocess
    import sys

    out = tmp_path / "strict.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--chat-template", template,
                    demo_params.model_path, str(out), "--force"], check=True, capture_output=True, timeout=60)
    return demo_params.replace(model_path=str(out))


def test_a_template_without_a_system_role_gets_the_system_prompt_in_the_first_user_turn(demo_params, tmp_path) -> None:
    """As llama.cpp polyfills it: a chat with a system prompt (the cockpit's default) or two user turns
    in a row (after a reply that failed) must not fail on Gemma's or Mistral's template."""
    sup = Supervisor(_with_template(demo_params, tmp_path, STRICT_TEMPLATE))
    sup.start(timeout=60)
    try:
        bare = sup.chat(ASK, max_tokens=4, temperature=0.0)
        list(bare)
        assert bare.status == "done", bare.error
        told = sup.chat([{"role": "system", "content": "Answer in one short sentence, please."}, *ASK],
                        max_tokens=4, temperature=0.0)
        list(told)
        assert told.status == "done", told.error
        assert told.metrics["prompt_tokens"] > bare.metrics["prompt_tokens"], "the system prompt was dropped"
        twice = sup.chat([{"role": "system", "content": "Be brief."}, *ASK, *ASK], max_tokens=4, temperature=0.0)
        list(twice)
        assert twice.status == "done", twice.error
        assert any("chat template refused" in line.text for line in sup.logs())
    finally:
        sup.stop()


def test_a_template_that_refuses_every_conversation_is_a_reply_error_not_a_crash(demo_params, tmp_path) -> None:
    sup = Supervisor(_with_template(demo_params, tmp_path, "{{ raise_exception('this template serves nobody') }}"))
    sup.start(timeout=60)
    try:
        reply = sup.chat(ASK, max_tokens=4)
        list(reply)
        # "messages:" first: the daemon answers it as the request's fault (400, param messages), not a 500
        assert reply.status == "error" and reply.error.startswith(
            "messages: the model's chat template refused the conversation: this template serves nobody"), reply.error
        assert sup.state is EngineState.READY
    finally:
        sup.stop()


def test_folding_for_strict_templates() -> None:
    from llmos_tui.engine.worker import fold_for_strict_templates as fold

    assert fold([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == \
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert fold([{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                 {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]) == \
        [{"role": "user", "content": "S\n\na\n\nb"}, {"role": "assistant", "content": "c"}]
    assert fold([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]


def test_a_chat_template_jinja_cannot_parse_loads_and_chats_in_chatml(demo_params, tmp_path) -> None:
    """llama-cpp-python compiles the GGUF's templates at load and raised, so the model did not load at
    all; llama-server falls back to ChatML and says so. So does the engine (the demo model speaks ChatML)."""
    sup = Supervisor(_with_template(demo_params, tmp_path, "{% if messages %}{{ messages[0].content }"))
    sup.start(timeout=60)
    try:
        reply = sup.chat(ASK, max_tokens=24, temperature=0.0)
        list(reply)
        assert reply.status == "done" and "KV cache" in reply.text, (reply.status, reply.error, reply.text)
        assert any("chat template does not parse" in line.text and "ChatML" in line.text for line in sup.logs())
    finally:
        sup.stop()


def test_the_prompt_starts_with_one_bos_whether_or_not_the_template_writes_it(supervisor, demo_params, tmp_path) -> None:
    """As llama-server: the vocabulary's BOS (the demo model was trained with one) is added unless the
    template wrote it. The demo's own template has no bos_token, and the prompt went without a BOS."""
    own = supervisor.chat(ASK, max_tokens=1, temperature=0.0)
    list(own)
    import llama_cpp

    template = llama_cpp.Llama(model_path=demo_params.model_path, vocab_only=True, verbose=False) \
        .metadata["tokenizer.chat_template"]
    sup = Supervisor(_with_template(demo_params, tmp_path, "{{ bos_token }}" + template))
    sup.start(timeout=60)
    try:
        written = sup.chat(ASK, max_tokens=1, temperature=0.0)
        list(written)
    finally:
        sup.stop()
    assert own.status == written.status == "done"
    assert own.metrics["prompt_tokens"] == written.metrics["prompt_tokens"], "one BOS in both, never two or none"
