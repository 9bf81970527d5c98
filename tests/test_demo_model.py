"""The shipped demo model (llmos_tui/data/demo.gguf) loads in real llama.cpp and chats sensibly.

It is built by scripts/make_demo_model.py; these tests hold it to what the app relies on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import llmos_tui

import gguf  # noqa: E402  (hard dependencies: a missing one must fail, not skip)
import llama_cpp  # noqa: E402

DEMO = Path(llmos_tui.__file__).resolve().parent / "data" / "demo.gguf"


@pytest.fixture(scope="module")
def llm():
    model = llama_cpp.Llama(model_path=str(DEMO), n_ctx=2048, n_threads=2, verbose=False, seed=0)
    yield model
    model.close()


def _stream(llm, messages, **kw):
    chunks: list[str] = []
    finish = None
    for chunk in llm.create_chat_completion(messages=messages, stream=True, **kw):
        choice = chunk["choices"][0]
        if choice["delta"].get("content"):
            chunks.append(choice["delta"]["content"])
        finish = choice.get("finish_reason") or finish
    return chunks, finish


def test_file_is_small_gguf():
    assert DEMO.is_file()
    assert DEMO.read_bytes()[:4] == b"GGUF"
    assert DEMO.stat().st_size < 5 * 1024 * 1024


def test_metadata_names_the_demo_model():
    reader = gguf.GGUFReader(str(DEMO))

    def value(key):
        field = reader.get_field(key)
        assert field is not None, key
        return field.contents()

    assert value("general.architecture") == "llama"
    assert value("general.name") == "llmos demo"
    assert "demo" in value("general.description").lower()
    template = value("tokenizer.chat_template")
    assert "<|im_start|>" in template and "<|im_start|>assistant\n" in template
    assert value("tokenizer.ggml.model") == "llama"
    tokens = value("tokenizer.ggml.tokens")
    assert tokens[value("tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    assert "<0xFF>" in tokens  # byte fallback


def test_llama_cpp_sees_chatml_and_metadata(llm):
    assert llm.chat_format == "chatml"
    assert llm.metadata["general.name"] == "llmos demo"
    assert llm.metadata["general.architecture"] == "llama"
    assert llm.token_eos() == llm.tokenize(b"<|im_end|>", add_bos=False, special=True)[0]


@pytest.mark.parametrize(
    "text", ["Grüße, 東京 🚀", "tabs\tnew\nlines  and <s> spaces ", "VRAM 24 GB @ 350 W"]
)
def test_tokenizer_round_trips_any_input(llm, text):
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert ids
    assert llm.detokenize(ids).decode("utf-8") == text


def test_chat_streams_printable_text_and_stops(llm):
    chunks, finish = _stream(llm, [{"role": "user", "content": "What is VRAM?"}], max_tokens=120)
    assert finish == "stop"
    assert len(chunks) >= 5
    text = "".join(chunks)
    assert all(c.isprintable() for c in text), repr(text)
    assert len(text.split()) >= 5
    assert "memory" in text.lower() or "vram" in text.lower()


@pytest.mark.parametrize(
    "messages",
    [
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "How do I make generation faster?"},
        ],
        [{"role": "user", "content": "Grüße aus 東京 🚀 — qu'est-ce que tu sais faire ?"}],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello! I am the llmos demo model."},
            {"role": "user", "content": "what is the kv cache"},
        ],
        # a long chat: the model was trained on windows as long as its context
        [
            m
            for q in ["what is vram", "how do I quit", "what is throttling", "thanks"] * 5
            for m in (
                {"role": "user", "content": q},
                {
                    "role": "assistant",
                    "content": "I am only a tiny demo model, so I cannot answer that well.",
                },
            )
        ]
        + [{"role": "user", "content": "What is VRAM?"}],
    ],
    ids=["system", "non-ascii", "three-turns", "long-history"],
)
def test_any_chat_stops_by_itself_with_valid_text(llm, messages):
    chunks, finish = _stream(llm, messages, max_tokens=160, temperature=0.8, seed=1)
    assert finish == "stop"
    assert len(chunks) >= 3
    text = "".join(chunks)
    assert all(c.isprintable() for c in text), repr(text)
