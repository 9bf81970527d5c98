"""`llmos-tui serve`: the daemon's OpenAI-compatible API on the real engine and the demo model.

One daemon (uvicorn in a thread, a free port, its own home) serves most tests; a slow-generation
fault makes requests last long enough to queue, cut, disconnect or crash them on purpose.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from llmos_tui.config import load_config
from llmos_tui.engine.supervisor import EngineState
from llmos_tui.errors import ConfigError
from llmos_tui.journal import Journal
from llmos_tui.serve.daemon import Daemon
from llmos_tui.serve.lock import DaemonRunning
from llmos_tui.serve.settings import ServeSettings

from tests.conftest import cli_env, running_daemon, wait_for

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = {"messages": [{"role": "user", "content": "What is VRAM?"}], "max_tokens": 12}
N_CTX = 1024


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    settings = ServeSettings(listen="127.0.0.1:0", token=TOKEN, queue_size=2, wait_s=30, drain_s=60,
                             stall_s=3, max_tokens=2048)
    with running_daemon(tmp_path_factory.mktemp("serve-home"), {"n_ctx": N_CTX, "n_threads": 2, "n_threads_batch": 2},
                        settings, name="test-daemon", doctor=False) as d:
        yield d


@pytest.fixture
def http(daemon: Daemon):
    with httpx.Client(base_url=daemon.url, headers=AUTH, timeout=60) as client:
        yield client


def slow(daemon: Daemon, ms: float) -> None:
    daemon.operator.supervisor.inject("slow", ms=ms)


def test_openai_client_streams_and_answers(daemon: Daemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key=TOKEN, max_retries=0)
    model = client.models.list().data[0].id
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model=model, messages=CHAT["messages"], max_tokens=12, stream=True):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces).strip(), "the stream carried no text"
    assert finish in ("stop", "length")
    whole = client.chat.completions.create(model=model, messages=CHAT["messages"], max_tokens=12)
    assert whole.choices[0].message.content.strip()
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0
    text = client.completions.create(model=model, prompt="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                                     max_tokens=6)  # a completion sees the text as written: here a ChatML turn
    assert text.choices[0].text and text.object == "text_completion"


def test_completions_continue_the_prompt_as_written(daemon: Daemon) -> None:
    """/v1/completions is text completion (OpenAI's, llama-server's): no chat template around the
    prompt. It was sent as a chat turn, so a base model or a code-completion client got an assistant."""
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key=TOKEN, max_retries=0)
    bare = client.completions.create(model="x", prompt="VRAM", max_tokens=4, temperature=0.0)
    chat = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "VRAM"}], max_tokens=4,
                                          temperature=0.0)
    # BOS + the text's own tokens, against the template's turn markers around it
    assert bare.usage.prompt_tokens <= 4 < chat.usage.prompt_tokens, (bare.usage, chat.usage)
    # written out in the demo model's own ChatML, a completion is the chat's answer: the text is all it sees
    turn = "<|im_start|>user\nWhat is VRAM?<|im_end|>\n<|im_start|>assistant\n"
    raw = client.completions.create(model="x", prompt=turn, max_tokens=24, temperature=0.0)
    asked = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "What is VRAM?"}],
                                           max_tokens=24, temperature=0.0)
    assert raw.choices[0].text == asked.choices[0].message.content and "memory" in raw.choices[0].text


def test_fit_context_leaves_out_the_oldest_turns_only_when_asked(daemon: Daemon, http: httpx.Client) -> None:
    """The attached cockpit's conversation keeps going past the context (the extension field
    fit_context, which OpenAI clients never send); a plain request that does not fit is a 400."""
    turn = [{"role": "user", "content": "What is the KV cache? " * 8},
            {"role": "assistant", "content": "The KV cache stores keys and values. " * 8}]
    long = {"messages": turn * (N_CTX // 60) + [{"role": "user", "content": "And VRAM?"}], "max_tokens": 8}
    plain = http.post("/v1/chat/completions", json=long)
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "context_length_exceeded"
    fitted = http.post("/v1/chat/completions", json={**long, "fit_context": True})
    assert fitted.status_code == 200, fitted.text
    usage = fitted.json()["usage"]
    assert usage["dropped_messages"] >= 2 and usage["prompt_tokens"] < N_CTX, usage


def test_raw_http_sse_health_models_metrics_and_token(daemon: Daemon, http: httpx.Client) -> None:
    assert httpx.get(daemon.url + "/health").json()["status"] == "ok"  # no token needed for the probe
    refused = httpx.get(daemon.url + "/v1/models")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(daemon.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get("/v1/models").json()["data"][0]["meta"]["n_ctx"] == N_CTX
    with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True,
                                                           "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    metrics = http.get("/metrics").text
    assert 'llmos_serve_requests_total{code="200",outcome=' in metrics
    assert "llmos_serve_time_to_first_token_seconds_count" in metrics
    assert "llmos_engine_" in metrics  # the exporter's own collector, on the same page


def test_bad_input_gets_400_before_the_engine(daemon: Daemon, http: httpx.Client) -> None:
    served = daemon.operator.supervisor.requests

    def error(response: httpx.Response, status: int = 400) -> str:
        assert response.status_code == status, response.text
        return response.json()["error"]["code"]

    assert error(http.post("/v1/chat/completions", content=b"{not json")) == "invalid_json"
    assert error(http.post("/v1/chat/completions", json={"messages": []})) == "invalid_request"
    assert error(http.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]})) \
        == "invalid_request"
    assert error(http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5000})) == "max_tokens_too_large"
    assert error(http.post("/v1/chat/completions", json={**CHAT, "max_tokens": N_CTX})) == "context_length_exceeded"
    assert error(http.post("/v1/chat/completions", json={**CHAT, "n": 2})) == "unsupported"
    image = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}]})
    assert error(image) == "invalid_request"
    assert "'image_url' is not served" in image.json()["error"]["message"], image.text  # named, not "not a string"
    ids = http.post("/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 4})
    assert error(ids) == "invalid_request" and "token-id prompts are not served" in ids.json()["error"]["message"]
    assert error(http.post("/v1/completions", json={"prompt": "x", "temperature": 9})) == "invalid_request"
    assert error(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 2_000_000}]}),
                 413) == "request_too_large"
    assert daemon.operator.supervisor.requests == served, "a refused request reached the engine"
    # a route or method it does not serve: OpenAI's error shape, not plain text
    assert error(http.post("/v1/embeddings", json={"input": "x"}), 404) == "not_found"
    assert error(http.get("/v1/chat/completions"), 405) == "method_not_allowed"
    # too long for the context: the engine's refusal comes back as a 400, streamed or not
    long = {"messages": [{"role": "user", "content": "GPU memory bandwidth " * 600}], "max_tokens": 4}
    assert error(http.post("/v1/chat/completions", json=long)) == "context_length_exceeded"
    assert error(http.post("/v1/chat/completions", json={**long, "stream": True})) == "context_length_exceeded"


def test_response_format_constrains_the_reply_to_json_and_to_a_schema(daemon: Daemon, http: httpx.Client) -> None:
    """As llama-server: json_schema makes the reply an instance of the schema (llama.cpp's grammar,
    so even the tiny demo model's reply parses), json_object makes it a JSON object; a format the
    server cannot honour is a 400 naming response_format, never silently dropped."""
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key=TOKEN, max_retries=0)
    schema = {"type": "object", "properties": {"gpu": {"type": "string", "maxLength": 8},
                                               "vram_gb": {"type": "integer"}},
              "required": ["gpu", "vram_gb"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="demo", messages=CHAT["messages"], max_tokens=128,
        response_format={"type": "json_schema", "json_schema": {"name": "gpu", "schema": schema}})
    assert reply.choices[0].finish_reason == "stop", reply
    value = json.loads(reply.choices[0].message.content)
    assert set(value) == {"gpu", "vram_gb"} and isinstance(value["gpu"], str) and isinstance(value["vram_gb"], int)
    assert len(value["gpu"]) <= 8
    with http.stream("POST", "/v1/chat/completions",
                     json={**CHAT, "max_tokens": 8, "stream": True, "response_format": {"type": "json_object"}}) as r:
        text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                       for line in r.iter_lines() if line.startswith("data: {") and '"choices": [{' in line)
    assert text.lstrip().startswith("{"), text
    served = daemon.operator.supervisor.requests
    for bad in ({"type": "json_schema"}, {"type": "xml"}, {"type": "json_schema", "json_schema": {"schema": "x"}}):
        r = http.post("/v1/chat/completions", json={**CHAT, "response_format": bad})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("response_format"), r.text
    assert daemon.operator.supervisor.requests == served, "a refused format reached the engine"
    # a schema the grammar converter cannot take: refused by the engine's process, as a 400
    r = http.post("/v1/chat/completions", json={**CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
    assert "grammar" in r.json()["error"]["message"]
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # the engine serves on


def test_logit_bias_moves_those_tokens_and_an_id_outside_the_vocabulary_is_a_400(daemon: Daemon,
                                                                                   http: httpx.Client) -> None:
    import llama_cpp

    from llmos_tui.paths import DEMO_MODEL

    vocab = llama_cpp.Llama(model_path=str(DEMO_MODEL), vocab_only=True, verbose=False)
    token = vocab.tokenize(b" GPU", add_bos=False)[0]
    piece = vocab.detokenize([token]).decode()
    greedy = {**CHAT, "max_tokens": 3, "temperature": 0}
    plain = http.post("/v1/chat/completions", json=greedy).json()["choices"][0]["message"]["content"]
    boosted = http.post("/v1/chat/completions", json={**greedy, "logit_bias": {str(token): 100}})
    assert boosted.status_code == 200, boosted.text
    text = boosted.json()["choices"][0]["message"]["content"]
    assert text.count(piece.strip()) == 3 and text != plain, (text, plain, piece)
    # an id past the vocabulary: found in the engine's process, a 400, and the engine serves on
    r = http.post("/v1/chat/completions", json={**greedy, "logit_bias": {str(vocab.n_vocab()): -100}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias", r.text
    for bad in ({"x": 1}, {"5": 500}):
        assert http.post("/v1/chat/completions", json={**greedy, "logit_bias": bad}).status_code == 400
    assert http.post("/v1/chat/completions", json={**greedy, "functions": [{"name": "f"}]}).status_code == 400
    assert http.post("/v1/chat/completions", json=greedy).json()["choices"][0]["message"]["content"] == plain


def test_concurrent_clients_are_queued_and_all_answered_and_a_full_queue_gets_429(
        daemon: Daemon, http: httpx.Client) -> None:
    slow(daemon, 40)  # 12 tokens: about half a second each
    results: list[httpx.Response] = []

    def ask() -> None:
        with httpx.Client(base_url=daemon.url, headers=AUTH, timeout=60) as c:
            results.append(c.post("/v1/chat/completions", json=CHAT))

    try:
        clients = [threading.Thread(target=ask) for _ in range(3)]  # 1 in flight + 2 waiting = queue_size
        for t in clients:
            t.start()
        assert wait_for(lambda: daemon.gate.stats().queued == 2 and daemon.gate.stats().in_flight == 1, 20)
        full = http.post("/v1/chat/completions", json=CHAT)
        assert full.status_code == 429, full.text
        assert full.json()["error"]["code"] == "queue_full" and int(full.headers["Retry-After"]) >= 1
        for t in clients:
            t.join(60)
    finally:
        slow(daemon, 0)
    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(r.json()["choices"][0]["message"]["content"] for r in results)


def test_served_requests_reach_the_doctors_traffic_detectors_with_their_queue_depth(daemon: Daemon) -> None:
    """The daemon publishes each request as a ``serve_request`` engine event; the doctor's traffic
    detectors read exactly those (they never import the daemon)."""
    from llmos_tui.doctor.detectors.traffic import queue_growth, served, tps_under_concurrency, ttft_long_prompt
    from tests.test_doctor_traffic import context

    events: list = []
    unsubscribe = daemon.operator.supervisor.subscribe(
        lambda e: events.append(e) if e.kind == "serve_request" else None)
    slow(daemon, 30)

    def ask() -> None:
        with httpx.Client(base_url=daemon.url, headers=AUTH, timeout=60) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200

    try:
        clients = [threading.Thread(target=ask) for _ in range(3)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
    finally:
        slow(daemon, 0)
        unsubscribe()
    answered = [e for e in events if e.data["outcome"] in ("done", "stop", "length")]
    assert len(answered) == 3
    assert max(e.data["queue_depth"] for e in answered) >= 1, "the first reply ended with others waiting"
    assert all(e.data["prompt_eval_tokens"] > 0 and e.data["ttft_ms"] > 0 and e.data["gen_tps"] > 0 for e in answered)
    for detect, name in ((tps_under_concurrency, "serve.tps_concurrency"), (ttft_long_prompt, "serve.ttft_long_prompt"),
                         (queue_growth, "serve.queue_growth")):
        ctx = context(name, events)
        assert len(served(ctx)) == 3 and detect(ctx) == [], "three healthy requests are no finding"


def test_client_disconnect_cancels_its_reply(daemon: Daemon, http: httpx.Client) -> None:
    slow(daemon, 50)
    try:
        started = time.monotonic()
        with http.stream("POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 400, "stream": True}) as r:
            for line in r.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break  # the first real piece: now hang up
        assert wait_for(lambda: daemon.gate.stats().in_flight == 0, 10), "the reply went on after the client left"
        assert time.monotonic() - started < 10  # 400 tokens at 50 ms would take 20 s
        metrics = daemon.operator.supervisor.last_metrics
        assert int(metrics.get("gen_tokens") or 0) < 400
    finally:
        slow(daemon, 0)
    assert 'outcome="cancelled"' in http.get("/metrics").text


def test_kill_9_mid_request_errors_that_client_and_the_next_request_waits_for_the_restart(
        daemon: Daemon, http: httpx.Client) -> None:
    sup = daemon.operator.supervisor
    slow(daemon, 50)
    old_pid = sup.pid
    events: list[str] = []
    after: list[httpx.Response] = []
    with http.stream("POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 200, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[len("data: "):])
            if len(events) == 2:  # the role chunk, then the first text: kill the engine mid-reply
                os.kill(sup.pid, signal.SIGKILL)
                # a request sent now finds the engine down: it waits for the restart instead of failing
                t = threading.Thread(target=lambda: after.append(http.post("/v1/chat/completions", json=CHAT)))
                t.start()
    last = json.loads(events[-1])
    assert "[DONE]" not in events
    assert last["error"]["code"] == "engine_crashed" and "SIGKILL" in last["error"]["message"], last
    assert "retry" in last["error"]["message"]
    t.join(40)
    assert after and after[0].status_code == 200, after
    assert after[0].json()["choices"][0]["message"]["content"]
    assert sup.pid != old_pid and sup.restarts >= 1
    # a whole (non-streamed) reply cut by a crash is a 503 with Retry-After that the client can read
    slow(daemon, 50)
    victim: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: victim.append(http.post("/v1/chat/completions",
                                                                    json={**CHAT, "max_tokens": 200})))
    thread.start()
    def has_output() -> bool:
        turn = daemon.gate.active
        return turn is not None and turn.reply is not None and turn.reply.text != ""

    assert wait_for(has_output, 10)
    os.kill(sup.pid, signal.SIGKILL)
    thread.join(40)
    assert victim and victim[0].status_code == 503, victim
    assert victim[0].json()["error"]["code"] == "engine_crashed" and "Retry-After" in victim[0].headers
    assert wait_for(lambda: sup.state == EngineState.READY, 30)


def test_a_request_that_crashes_the_engine_twice_is_not_sent_a_third_time(daemon: Daemon, http: httpx.Client) -> None:
    """A poison request (llama.cpp aborts on it: SIGABRT) crashes the engine each time it is sent, and
    the OpenAI client retries a 503 by itself. After two crashes in the engine's own code the same
    request is a 422 that never reaches the engine; other requests, and a request the engine died
    under from outside (SIGKILL: the OOM killer, an operator), are served as before."""
    sup = daemon.operator.supervisor
    poison = {"messages": [{"role": "user", "content": "poison request 7f3a"}], "max_tokens": 200}

    def crash_during(body: dict, sig: signal.Signals) -> httpx.Response:
        assert wait_for(lambda: sup.state == EngineState.READY, 30)
        slow(daemon, 50)
        got: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: got.append(http.post("/v1/chat/completions", json=body)))
        thread.start()
        assert wait_for(lambda: daemon.gate.active is not None and daemon.gate.active.reply is not None
                        and daemon.gate.active.reply.text != "", 10)
        os.kill(sup.pid, sig)
        thread.join(40)
        assert wait_for(lambda: sup.state == EngineState.READY, 30)
        return got[0]

    killed = {**poison, "messages": [{"role": "user", "content": "killed from outside 7f3a"}]}
    for _ in range(2):
        assert crash_during(killed, signal.SIGKILL).status_code == 503
    assert http.post("/v1/chat/completions", json={**killed, "max_tokens": 4}).status_code == 200  # not the same body
    for _ in range(2):
        r = crash_during(poison, signal.SIGABRT)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_crashed", r.text
    served = sup.requests
    refused = http.post("/v1/chat/completions", json=poison)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "request_crashed_engine" and "SIGABRT, SIGABRT" in error["message"]
    assert sup.requests == served, "the quarantined request reached the engine"
    writer = daemon.operator.journal_writer
    assert writer is not None and writer.flush(10)
    journal = Journal(daemon.operator.config.journal_file, readonly=True)
    try:
        quarantined = journal.events("serve_quarantine")
    finally:
        journal.close()
    assert len(quarantined) == 1 and quarantined[0]["data"]["signals"] == ["SIGABRT", "SIGABRT"], quarantined
    assert "poison" not in json.dumps(quarantined[0]["data"]), "the prompt text journaled without log_prompts"
    assert http.post("/v1/chat/completions", json={**poison, "max_tokens": 4}).status_code == 200
    slow(daemon, 0)
    # the quarantine belongs to the configuration it crashed under: under another one it is sent again
    assert daemon.operator.apply({"n_ctx": 768}, reason="test: another configuration").ok
    assert http.post("/v1/chat/completions", json=poison).status_code == 200
    assert daemon.operator.apply({"n_ctx": N_CTX}, reason="test: back").ok
    assert http.post("/v1/chat/completions", json=poison).status_code == 422
    killed_again = crash_during(killed, signal.SIGKILL)  # SIGKILL is never the request's fault
    assert killed_again.status_code == 503
    slow(daemon, 0)
    assert 'outcome="quarantined"' in http.get("/metrics").text


def test_a_hung_engine_cuts_the_reply_and_the_daemon_restarts_it(daemon: Daemon, http: httpx.Client) -> None:
    sup = daemon.operator.supervisor
    old_pid = sup.pid
    sup.inject("hang")  # the engine's command loop blocks: the next request never gets a token
    started = time.monotonic()
    hung = http.post("/v1/chat/completions", json=CHAT)
    assert hung.status_code == 503, hung.text
    error = hung.json()["error"]
    assert error["code"] == "reply_cut" and "produced nothing for 3 s" in error["message"], error
    assert time.monotonic() - started < 30
    after = http.post("/v1/chat/completions", json=CHAT)  # waits for the restart
    assert after.status_code == 200, after.text
    assert sup.pid != old_pid
    assert any("the engine hung" in line for line in daemon.lines), daemon.lines  # type: ignore[attr-defined]


def test_journal_keeps_traffic_metrics_without_the_text(daemon: Daemon) -> None:
    writer = daemon.operator.journal_writer
    assert writer is not None and writer.flush(10)
    journal = Journal(daemon.operator.config.journal_file, readonly=True)
    try:
        chats = [c for c in journal.list_chats(20) if (c.title or "").startswith("serve: API traffic")]
        assert len(chats) == 1
        messages = journal.chat_messages(chats[0].id)
        traffic = journal.chat_traffic()
    finally:
        journal.close()
    answered = [m for m in messages if m.role == "assistant" and m.status == "done"]
    assert answered and all(m.content == "" for m in messages), "prompt or reply text journaled without log_prompts"
    assert all(m.role == "assistant" for m in messages)
    assert answered[0].metrics["source"] == "serve" and answered[0].metrics["gen_tokens"] > 0
    assert traffic["replies"] >= len(answered) and traffic["gen_tokens"] > 0  # the tuner's traffic objective


def test_a_second_daemon_on_the_same_journal_is_refused(daemon: Daemon) -> None:
    with pytest.raises(DaemonRunning) as refused:
        Daemon(daemon.operator.config, ServeSettings(listen="127.0.0.1:0"), doctor=False)
    assert f"pid {os.getpid()}" in str(refused.value) and daemon.url in str(refused.value)


def test_a_change_drains_the_reply_in_flight_and_tells_newcomers_503(daemon: Daemon, http: httpx.Client) -> None:
    op = daemon.operator
    slow(daemon, 40)
    inflight: list[httpx.Response] = []
    changed: list[object] = []
    t1 = threading.Thread(target=lambda: inflight.append(http.post("/v1/chat/completions",
                                                                   json={**CHAT, "max_tokens": 25})))
    t1.start()
    assert wait_for(lambda: daemon.gate.stats().in_flight == 1, 10)
    t2 = threading.Thread(target=lambda: changed.append(op.apply({"n_ctx": 512}, reason="test: smaller context")))
    t2.start()
    assert wait_for(lambda: daemon.gate.hold is not None, 10)
    busy = http.post("/v1/chat/completions", json=CHAT)
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "engine_busy", busy.text
    assert int(busy.headers["Retry-After"]) >= 1 and "change" in busy.json()["error"]["message"]
    t1.join(90)  # drain_s is 60: a loaded 2-core box may take long over 25 slowed tokens
    t2.join(120)
    assert inflight[0].status_code == 200, inflight[0].text  # drained: finished, not cut
    assert inflight[0].json()["choices"][0]["finish_reason"] == "length"
    assert changed and changed[0].ok, changed  # type: ignore[attr-defined]
    assert http.get("/v1/models").json()["data"][0]["meta"]["n_ctx"] == 512
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_the_control_socket_is_owner_only_and_serves_the_operator_verbs_and_the_chat(daemon: Daemon) -> None:
    from llmos_tui.serve.client import DaemonClient, find_daemons

    path = daemon.control_path
    assert path is not None and path in find_daemons(path.parent)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    events: list[dict] = []
    with DaemonClient(path) as client:
        snap = client.snapshot()
        assert snap["mode"] == "serve" and snap["face"] == "serve" and snap["engine"]["state"] == "ready"
        assert snap["serve"]["queued"] == 0
        assert client.chat([{"role": "user", "content": "What is VRAM?"}], max_tokens=8)  # no token on the socket

        def watch() -> None:
            with DaemonClient(path) as watcher:
                for event in watcher.events():
                    events.append(event)
                    if event["type"] == "change":
                        return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        time.sleep(0.3)
        result = client.apply({"n_ctx": 768}, reason="test: through the control socket")
        assert result["ok"] and result["state"] == "applied", result
        watcher.join(20)
        assert client.snapshot()["engine"]["n_ctx"] == 768
        assert "start limit" in client.reset_start_limit() or "doctor" in client.reset_start_limit()
    assert any(e["type"] == "engine" and e["kind"] == "loaded" for e in events)
    assert events[-1]["type"] == "change" and events[-1]["data"]["state"] == "applied"


def test_an_engine_nobody_will_restart_gets_an_immediate_503_naming_why(tmp_path: Path) -> None:
    config = load_config(overrides={"n_ctx": 512, "n_threads": 2, "n_threads_batch": 2, "readonly": True,
                                    "journal": str(tmp_path / "readonly.sqlite")})
    lines: list[str] = []
    ro = Daemon(config, ServeSettings(listen="127.0.0.1:0", wait_s=30), doctor=False, say=lines.append)
    thread = threading.Thread(target=ro.run, daemon=True)
    thread.start()
    try:
        assert ro.ready.wait(30) and wait_for(lambda: ro.operator.supervisor.state == EngineState.READY, 60), lines
        ro.operator.supervisor.kill()
        assert wait_for(lambda: ro.operator.supervisor.state == EngineState.CRASHED, 10)
        started = time.monotonic()
        down = httpx.post(ro.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert time.monotonic() - started < 5, "it waited for a restart that cannot come"
        assert down.status_code == 503 and down.json()["error"]["code"] == "engine_down", down.text
        assert "read-only mode" in down.json()["error"]["message"] and down.headers["Retry-After"] == "30"
        health = httpx.get(ro.url + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "down" and "read-only" in health.json()["down"]
    finally:
        ro.stop("test end")
        thread.join(30)


def test_a_token_is_required_off_loopback() -> None:
    with pytest.raises(ConfigError, match="needs a bearer token"):
        ServeSettings(listen="0.0.0.0:8080").check()
    ServeSettings(listen="0.0.0.0:8080", token="t").check()
    ServeSettings(listen="[::1]:8080").check()
    out = subprocess.run([sys.executable, "-m", "llmos_tui.cli", "serve", "--listen", "0.0.0.0:0"],
                         capture_output=True, text=True, timeout=60, env={**cli_env(), "LLMOS_TUI_SERVE_TOKEN": ""})
    assert out.returncode == 2 and "needs a bearer token" in out.stderr, out


SERVE_SCRIPT = """
import sys
from llmos_tui.config import load_config
from llmos_tui.serve.daemon import Daemon
from llmos_tui.serve.settings import ServeSettings
import threading
from llmos_tui.engine.supervisor import EngineState
config = load_config(overrides={"n_ctx": 512, "n_threads": 2, "n_threads_batch": 2})
daemon = Daemon(config, ServeSettings(listen="127.0.0.1:0"), doctor=False)

def slow_down():  # every token 20 ms: a reply lasts long enough to be in flight at the signal
    import time
    while daemon.operator.supervisor.state != EngineState.READY:
        time.sleep(0.02)
    daemon.operator.supervisor.inject("slow", ms=20)
    print("llmos-tui serve: test: slowed", flush=True)

threading.Thread(target=slow_down, daemon=True).start()
sys.exit(daemon.run())
"""


def test_sigterm_finishes_the_reply_in_flight_and_flushes_the_journal(tmp_path: Path) -> None:
    env = {**cli_env(), "LLMOS_TUI_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        url = None
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "listening on " in line:
                url = line.split("listening on ")[1].split()[0]
            if "test: slowed" in line:
                break
        assert url, lines
        got: list[httpx.Response] = []
        request = {"messages": CHAT["messages"], "max_tokens": 60, "stream": True}

        first = threading.Event()
        body_lines: list[str] = []

        def stream() -> None:
            with httpx.stream("POST", url + "/v1/chat/completions", json=request, timeout=30) as r:
                for line in r.iter_lines():
                    body_lines.append(line)
                    if line.startswith("data: "):
                        first.set()
                got.append(r)

        t = threading.Thread(target=stream)
        t.start()
        assert first.wait(30)  # in flight (its first piece came): 60 slowed tokens take 1.2 s more
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping (SIGTERM): draining 1 reply in flight" in rest and "stopped (SIGTERM): 1 requests served" in rest, rest
    assert got and got[0].status_code == 200
    body = "\n".join(body_lines)
    assert body.rstrip().endswith("data: [DONE]"), body[-300:]  # finished, not cut: the drain let it end
    journal = Journal(tmp_path / "home" / "data" / "journal.sqlite", readonly=True)
    try:
        assert journal.chat_traffic()["replies"] == 1  # journaled before the exit: the writer was flushed
    finally:
        journal.close()
