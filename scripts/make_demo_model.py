#!/usr/bin/env python3
"""Build llmos_tui/data/demo.gguf: a tiny llama-architecture chat model trained on scripts/demo_corpus.txt.

The demo model is what llmos-tui runs when no model is configured. It is small enough to ship
inside the package (under 3 MB) and fast on any CPU, and it is trained (not random) so that it
answers in plain English about running a local LLM and stops by itself with <|im_end|>.

What the script does, deterministically (fixed seeds, fixed step count):

1. Reads the corpus: blocks of user phrasings (``U:``) with one assistant reply (``A:``), plus
   system prompts (``S:``).
2. Learns a small SentencePiece-style vocabulary: control tokens, the 256 byte-fallback tokens
   ``<0x00>``..``<0xFF>`` (so any input round-trips), printable ASCII characters, and BPE merges
   of words, scored so that llama.cpp's SPM tokenizer applies them in the learned order.
3. Samples ChatML conversations (the exact prompt text llama-cpp-python's "chatml" format
   builds) and trains a llama-shaped transformer on the assistant replies with PyTorch (CPU).
4. Writes the GGUF with the ``gguf`` package: llama architecture, F16 matrices, F32 norms,
   tied output embedding, the tokenizer and the ChatML chat template in metadata.
5. Self-check: loads the file with llama-cpp-python, compares its tokenizer with ours and
   streams a few replies (in this interpreter, or another one given by --check-python).

Dev-only dependencies: torch (CPU), numpy, gguf. Not needed at run time.

    python3 -m venv /tmp/trainvenv && /tmp/trainvenv/bin/pip install torch==2.13.0 gguf numpy
    /tmp/trainvenv/bin/python scripts/make_demo_model.py --check-python /tmp/venv/bin/python
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT / "scripts" / "demo_corpus.txt"
DEFAULT_OUT = ROOT / "llmos_tui" / "data" / "demo.gguf"

MODEL_NAME = "llmos demo"
MODEL_DESCRIPTION = (
    "Tiny demo model for llmos-tui: a small llama-architecture transformer trained from scratch "
    "on a small built-in corpus about operating a local LLM. It only knows a few short answers; "
    "load a real GGUF model for real work."
)

# Exactly llama-cpp-python's CHATML_CHAT_TEMPLATE, so it picks its built-in "chatml" format.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPACE = "\u2581"  # SentencePiece's visible space
UNK, BOS, EOS_TEXT, IM_START, IM_END = "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"
SPECIALS = [UNK, BOS, EOS_TEXT, IM_START, IM_END]
N_SPECIAL = len(SPECIALS)
BYTE_BASE = N_SPECIAL  # ids BYTE_BASE .. BYTE_BASE+255 are <0x00>..<0xFF>

# gguf token types (gguf.TokenType): 1 normal, 2 unknown, 3 control, 6 byte
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_BYTE = 1, 2, 3, 6


@dataclass(frozen=True)
class Config:
    seed: int = 1234
    vocab_size: int = 1024
    n_embd: int = 160
    n_layer: int = 4
    n_head: int = 4
    n_ff: int = 448
    n_ctx_train: int = 2048  # written as context_length (llmos-tui defaults to n_ctx 2048)
    seq_len: int = 768  # long windows: the app keeps the chat history in the prompt
    batch: int = 5
    long_seq_len: int = 2048  # every long_every-th step: whole-context windows (distances up to 2048)
    long_batch: int = 2
    long_every: int = 4
    steps: int = 600
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.05
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    n_conversations: int = 3000
    dropout: float = 0.0  # training only (0.1 generalised no better within the step budget)


# ----------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------


@dataclass
class Block:
    questions: list[str]
    answer: str
    keywords: list[str]


def read_corpus(path: Path) -> tuple[list[Block], list[str]]:
    """Parse the corpus: blank-line separated blocks of 'U:' lines, one 'A:' line and optional
    'K:' lines (comma-separated topic keywords); 'S:' lines are system prompts; '#' comments."""
    blocks: list[Block] = []
    systems: list[str] = []
    qs: list[str] = []
    ans: list[str] = []
    kws: list[str] = []

    def flush() -> None:
        if qs or ans or kws:
            if not qs or len(ans) != 1:
                raise SystemExit(f"corpus block needs U: lines and exactly one A: line: {qs} {ans}")
            blocks.append(Block(list(qs), ans[0], list(kws)))
        qs.clear()
        ans.clear()
        kws.clear()

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif line.startswith("#"):
            continue
        elif line.startswith("U:"):
            qs.append(line[2:].strip())
        elif line.startswith("A:"):
            ans.append(line[2:].strip())
        elif line.startswith("K:"):
            kws.extend(k.strip() for k in line[2:].split(",") if k.strip())
        elif line.startswith("S:"):
            systems.append(line[2:].strip())
        else:
            raise SystemExit(f"corpus line without U:/A:/S: prefix: {raw!r}")
    flush()
    for b in blocks:
        bad = [c for c in b.answer if not (32 <= ord(c) < 127)]
        if bad:
            raise SystemExit(f"assistant replies must be printable ASCII: {b.answer!r}")
    return blocks, systems


def chatml_prompt(system: str, turns: list[tuple[str, str | None]]) -> str:
    """The prompt text llama-cpp-python's built-in 'chatml' format makes (it always writes a
    system turn, empty when there is no system message)."""
    out = f"{IM_START}system\n{system}{IM_END}\n"
    for user, reply in turns:
        out += f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
        if reply is not None:
            out += f"{reply}{IM_END}\n"
    return out


KEYWORD_TEMPLATES = [
    "{k}?",
    "{k}",
    "What about {k}?",
    "Tell me about {k}.",
    "Explain {k}.",
    "explain {k}",
    "I have a question about {k}.",
    "Can you tell me about {k}?",
    "help with {k}",
    "info on {k} please",
    "{k}, what should I know?",
    "Question: {k}",
    "something about {k}",
    "what do you know about {k}?",
]
FILLERS_BEFORE = [
    "hi, ",
    "hey ",
    "ok, ",
    "so ",
    "quick question: ",
    "please, ",
    "hello! ",
    "um, ",
    "I am new to this. ",
    "Sorry to bother you, ",
    "One more thing: ",
]
NOISE_WORDS = [
    "the",
    "my",
    "really",
    "actually",
    "please",
    "just",
    "now",
    "again",
    "here",
    "a",
    "so",
    "exactly",
    "basically",
    "today",
    "still",
    "also",
    "maybe",
    "all",
]
FILLERS_AFTER = [" thanks", " please", "?", " :)", " Danke!", " ¿sí?", " 🙂", " thx", " asap", " (on Linux)"]


def make_question(block: Block, rng: random.Random) -> str:
    """One user message for block. Operators rarely type the corpus phrasing: mix in keyword
    questions, lowercase, dropped punctuation and words, and small talk around the question."""
    if block.keywords and rng.random() < 0.35:
        k = rng.choice(block.keywords)
        q = rng.choice(KEYWORD_TEMPLATES).format(k=k)
    else:
        q = rng.choice(block.questions)
    words = q.split()
    # word noise, so that the topic words matter more than the exact phrasing
    r = rng.random()
    if len(words) >= 3 and r < 0.15:
        del words[rng.randrange(len(words))]
    elif r < 0.25:
        words.insert(rng.randrange(len(words) + 1), rng.choice(NOISE_WORDS))
    elif len(words) >= 2 and r < 0.3:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif r < 0.35:
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) >= 4:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]  # typo: swap two letters
    q = " ".join(words)
    r = rng.random()
    if r < 0.2:
        q = q.lower()
    elif r < 0.28:
        q = q.rstrip("?.!")
    elif r < 0.31:
        q = q.upper()
    r = rng.random()
    if r < 0.08:
        q = rng.choice(FILLERS_BEFORE) + (q if q.isupper() else q[:1].lower() + q[1:])
    elif r < 0.14:
        q = q + rng.choice(FILLERS_AFTER)
    return q


def make_system(systems: list[str], rng: random.Random) -> str:
    """Half the chats have no system prompt (llmos-tui's default), the rest one from the corpus.
    (Mixing in made-up system prompts was tried: it generalised no better.)"""
    if not systems or rng.random() >= 0.5:
        return ""
    return rng.choice(systems)


def make_conversations(blocks: list[Block], systems: list[str], n: int, rng: random.Random):
    """Yield (system, [(user, reply), ...]) conversations, 1 to 12 turns each (chats grow long in the app)."""
    for _ in range(n):
        system = make_system(systems, rng)
        k = rng.choices(range(1, 13), weights=[6, 4, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1])[0]
        turns = []
        for _ in range(k):
            b = rng.choice(blocks)
            turns.append((make_question(b, rng), b.answer))
        yield system, turns


# ----------------------------------------------------------------------------------------------
# Tokenizer: SentencePiece-style vocabulary used through llama.cpp's SPM algorithm
# ----------------------------------------------------------------------------------------------

WORD_RE = re.compile(SPACE + "?[A-Za-z']+")


class Tokenizer:
    def __init__(self, pieces: list[str], scores: list[float], types: list[int]):
        self.pieces, self.scores, self.types = pieces, scores, types
        self.index = {p: i for i, p in enumerate(pieces)}
        self.special_re = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS[1:]) + ")")

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> Tokenizer:
        pieces = list(SPECIALS) + [f"<0x{b:02X}>" for b in range(256)]
        types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL, TT_CONTROL, TT_CONTROL] + [TT_BYTE] * 256
        scores = [0.0] * len(pieces)
        chars = [SPACE] + [chr(c) for c in range(33, 127)]
        for c in chars:
            pieces.append(c)
            types.append(TT_NORMAL)
            scores.append(-1e9)  # single characters never come out of a merge
        # BPE over words (optional leading space + letters); merges never cross words.
        words: Counter[str] = Counter()
        for t in texts:
            words.update(WORD_RE.findall(t.replace(" ", SPACE)))
        seqs = {w: list(w) for w in words}
        n_merges = vocab_size - len(pieces)
        for rank in range(n_merges):
            pairs: Counter[tuple[str, str]] = Counter()
            for w, s in seqs.items():
                f = words[w]
                for a, b in itertools.pairwise(s):
                    pairs[(a, b)] += f
            if not pairs:
                break
            (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
            new = a + b
            pieces.append(new)
            types.append(TT_NORMAL)
            scores.append(-float(rank))  # earlier merge = higher score = applied first
            for w, s in seqs.items():
                if len(s) < 2:
                    continue
                out, i = [], 0
                while i < len(s):
                    if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                        out.append(new)
                        i += 2
                    else:
                        out.append(s[i])
                        i += 1
                seqs[w] = out
        return cls(pieces, scores, types)

    def _spm(self, text: str, out: list[int]) -> None:
        """llama.cpp's llm_tokenizer_spm_session::tokenize, on UTF-8 characters."""
        syms = list(text)
        n = len(syms)
        if n == 0:
            return
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, int, int]] = []

        def add(left: int, right: int) -> None:
            if left == -1 or right == -1:
                return
            t = syms[left] + syms[right]
            tok = self.index.get(t)
            if tok is None:
                return
            heapq.heappush(heap, (-self.scores[tok], left, right, len(t.encode())))

        for i in range(1, n):
            add(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not syms[left] or not syms[right] or len((syms[left] + syms[right]).encode()) != size:
                continue
            syms[left] = syms[left] + syms[right]
            syms[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            add(prev[left], left)
            add(left, nxt[left])

        # llama.cpp's resegment(): every merge result is a vocabulary piece, so a final symbol is
        # either a piece or a single character without one, which falls back to its UTF-8 bytes.
        i = 0
        while i != -1:
            tok = self.index.get(syms[i])
            if tok is not None:
                out.append(tok)
            else:
                out.extend(BYTE_BASE + b for b in syms[i].encode("utf-8"))
            i = nxt[i]

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """Like llama_tokenize(add_special=bos, parse_special=True) with add_space_prefix off."""
        out = [self.index[BOS]] if bos else []
        for part in self.special_re.split(text):
            if not part:
                continue
            if part in self.index and self.types[self.index[part]] == TT_CONTROL:
                out.append(self.index[part])
            else:
                self._spm(part.replace(" ", SPACE), out)
        return out

    def decode(self, ids: list[int]) -> str:
        buf = bytearray()
        for i in ids:
            if self.types[i] == TT_BYTE:
                buf.append(i - BYTE_BASE)
            elif self.types[i] == TT_NORMAL:
                buf += self.pieces[i].replace(SPACE, " ").encode()
        return buf.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# Model (PyTorch, imported lazily so --check-only needs no torch)
# ----------------------------------------------------------------------------------------------


def build_model(cfg: Config):
    import torch
    import torch.nn.functional as F
    from torch import nn

    hd = cfg.n_embd // cfg.n_head

    class RMSNorm(nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_eps) * self.weight

    # llama.cpp's LLAMA_ROPE_TYPE_NORM rotates adjacent pairs (x[2i], x[2i+1]).
    inv = cfg.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.arange(cfg.n_ctx_train, dtype=torch.float32)[:, None] * inv[None, :]
    cos_t, sin_t = ang.cos(), ang.sin()

    def rope(x):  # x: (B, H, T, hd)
        T = x.shape[2]
        c, s = cos_t[:T], sin_t[:T]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)

    drop = nn.Dropout(cfg.dropout)  # stateless: one module serves every place

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg.n_embd
            self.attn_norm = RMSNorm(d)
            self.attn_q = nn.Linear(d, d, bias=False)
            self.attn_k = nn.Linear(d, d, bias=False)
            self.attn_v = nn.Linear(d, d, bias=False)
            self.attn_output = nn.Linear(d, d, bias=False)
            self.ffn_norm = RMSNorm(d)
            self.ffn_gate = nn.Linear(d, cfg.n_ff, bias=False)
            self.ffn_up = nn.Linear(d, cfg.n_ff, bias=False)
            self.ffn_down = nn.Linear(cfg.n_ff, d, bias=False)

        def forward(self, x):
            B, T, d = x.shape
            h = self.attn_norm(x)
            q = self.attn_q(h).view(B, T, cfg.n_head, hd).transpose(1, 2)
            k = self.attn_k(h).view(B, T, cfg.n_head, hd).transpose(1, 2)
            v = self.attn_v(h).view(B, T, cfg.n_head, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
            x = x + drop(self.attn_output(a.transpose(1, 2).reshape(B, T, d)))
            h = self.ffn_norm(x)
            return x + drop(self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h)))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embd = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg.n_layer))
            self.output_norm = RMSNorm(cfg.n_embd)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02
                    if name.endswith(("attn_output.weight", "ffn_down.weight")):
                        std = 0.02 / math.sqrt(2 * cfg.n_layer)
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx):
            x = drop(self.token_embd(idx))
            for layer in self.layers:
                x = layer(x)
            return self.output_norm(x) @ self.token_embd.weight.T  # tied output

    return Model()


def make_batches(cfg: Config, tok: Tokenizer, blocks, systems, rng: random.Random):
    """Token stream of whole conversations (each starting with BOS) and loss weights that are
    non-zero on the assistant replies and their <|im_end|> only."""
    import numpy as np

    im_start, im_end = tok.index[IM_START], tok.index[IM_END]
    assistant_head = tok.encode(f"{IM_START}assistant\n", bos=False)
    ids: list[int] = []
    mask: list[int] = []
    starts: list[int] = []
    for system, turns in make_conversations(blocks, systems, cfg.n_conversations, rng):
        seq = tok.encode(chatml_prompt(system, turns), bos=True)
        m = [0] * len(seq)
        # mark reply tokens: after each "<|im_start|>assistant\n" up to and including <|im_end|>
        i = 0
        while i < len(seq):
            if seq[i] == im_start and seq[i : i + len(assistant_head)] == assistant_head:
                j = i + len(assistant_head)
                while j < len(seq) and seq[j] != im_end:
                    # the first reply tokens pick which answer to give: weight them up
                    m[j] = 3 if j < i + len(assistant_head) + 3 else 1
                    j += 1
                if j < len(seq):
                    m[j] = 1
                i = j
            i += 1
        starts.append(len(ids))
        ids.extend(seq)
        mask.extend(m)
    return np.array(ids, dtype=np.int64), np.array(mask, dtype=np.float32), np.array(starts)


def train(cfg: Config, tok: Tokenizer, blocks, systems, log) -> tuple[object, float, float]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    rng = random.Random(cfg.seed)
    ids, mask, starts = make_batches(cfg, tok, blocks, systems, rng)
    log(
        f"training data: {len(starts)} conversations, {len(ids)} tokens, "
        f"{int((mask > 0).sum())} reply tokens in the loss"
    )
    starts = starts[starts + max(cfg.seq_len, cfg.long_seq_len) + 1 <= len(ids)]
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {cfg.n_layer} layers, {cfg.n_embd} wide, {cfg.n_head} heads, ffn {cfg.n_ff}, "
        f"{n_params:,} parameters (tied output)"
    )
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    gen = np.random.default_rng(cfg.seed)
    t0 = time.time()
    ema = None
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        # windows start at a conversation and run on into the next ones: the model learns to
        # answer the latest question while far-away text (up to the whole context) is present
        long = cfg.long_every and step % cfg.long_every == cfg.long_every - 1
        batch, seq_len = (cfg.long_batch, cfg.long_seq_len) if long else (cfg.batch, cfg.seq_len)
        off = torch.from_numpy(gen.choice(starts, size=batch))
        rows = off[:, None] + torch.arange(seq_len + 1)[None, :]
        x, y, m = ids_t[rows[:, :-1]], ids_t[rows[:, 1:]], mask_t[rows[:, 1:]]
        logits = model(x)
        loss_tok = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1), reduction="none")
        loss = (loss_tok * m.reshape(-1)).sum() / m.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 100 == 0 or step == cfg.steps - 1:
            log(
                f"  step {step:5d}/{cfg.steps}  loss {loss.item():.3f}  (smoothed {ema:.3f})  "
                f"lr {lr:.2e}  {time.time() - t0:6.1f}s"
            )
    return model, ema, time.time() - t0


def greedy_reply(model, tok: Tokenizer, cfg: Config, question: str, max_new: int = 80) -> str:
    import torch

    ids = tok.encode(chatml_prompt("", [(question, None)]))
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(torch.tensor([ids[-cfg.seq_len :]]))[0, -1]
            nxt = int(logits.argmax())
            if nxt == tok.index[IM_END]:
                break
            out.append(nxt)
            ids.append(nxt)
    return tok.decode(out)


# ----------------------------------------------------------------------------------------------
# GGUF
# ----------------------------------------------------------------------------------------------


def write_gguf(path: Path, cfg: Config, tok: Tokenizer, model) -> None:
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gguf.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(MODEL_NAME)
    w.add_description(MODEL_DESCRIPTION)
    w.add_license("MIT")
    w.add_context_length(cfg.n_ctx_train)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head)
    w.add_layer_norm_rms_eps(cfg.rms_eps)
    w.add_rope_dimension_count(cfg.n_embd // cfg.n_head)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tok.pieces)
    w.add_token_scores(tok.scores)
    w.add_token_types(tok.types)
    w.add_unk_token_id(tok.index[UNK])
    w.add_bos_token_id(tok.index[BOS])
    w.add_eos_token_id(tok.index[IM_END])
    w.add_pad_token_id(tok.index[EOS_TEXT])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHATML_TEMPLATE)

    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    tensors = {"token_embd.weight": sd["token_embd.weight"], "output_norm.weight": sd["output_norm.weight"]}
    for i in range(cfg.n_layer):
        for part in (
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ):
            tensors[f"blk.{i}.{part}.weight"] = sd[f"layers.{i}.{part}.weight"]
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr.astype(np.float32 if arr.ndim == 1 else np.float16))
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)  # never leave a half-written model at the shipped path


# ----------------------------------------------------------------------------------------------
# Self-check through llama-cpp-python
# ----------------------------------------------------------------------------------------------

CHECK_PROMPTS = [
    "What is VRAM?",
    "How do I make generation faster?",
    "Who are you?",
    "Was ist ein KV-Cache? Grüße aus 東京 🚀",
]


def self_check(model_path: str, expected_json: str | None) -> int:
    """Load with llama-cpp-python, compare tokenizers, stream replies. Returns an exit code."""
    import llama_cpp

    t = time.time()
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=1024, n_threads=2, verbose=False, seed=1)
    print(
        f"self-check: llama-cpp-python {llama_cpp.__version__} loaded {model_path} in "
        f"{(time.time() - t) * 1000:.0f} ms; chat_format={llm.chat_format!r}"
    )
    ok = True
    if expected_json:
        cases = json.loads(Path(expected_json).read_text(encoding="utf-8"))
        bad = 0
        for text, ids in cases:
            got = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if got != ids:
                bad += 1
                if bad <= 3:
                    print(
                        f"  tokenizer mismatch on {text[:60]!r}:\n    ours  {ids[:40]}\n    llama {got[:40]}"
                    )
        print(f"  tokenizer: {len(cases) - bad}/{len(cases)} texts tokenized identically")
        ok &= bad == 0
    for prompt in CHECK_PROMPTS:
        stamps: list[float] = []

        def count(_ids, scores, stamps=stamps):  # runs once per sampled token
            stamps.append(time.perf_counter())
            return scores

        t = time.perf_counter()
        chunks, finish = [], None
        for ch in llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            max_tokens=120,
            logits_processor=llama_cpp.LogitsProcessorList([count]),
        ):
            choice = ch["choices"][0]
            piece = choice["delta"].get("content")
            if piece:
                chunks.append(piece)
            finish = choice.get("finish_reason") or finish
        end = time.perf_counter()
        text = "".join(chunks)
        printable = all(c.isprintable() for c in text)
        ok &= printable and finish == "stop" and len(chunks) >= 2
        gen = len(stamps) - 1
        rate = gen / (end - stamps[0]) if gen > 0 and end > stamps[0] else float("nan")
        print(
            f"  > {prompt}\n  < {text}\n    [{len(chunks)} chunks, {len(stamps)} tokens, "
            f"finish={finish}, printable={printable}, first token after "
            f"{(stamps[0] - t) * 1000:.0f} ms, then {rate:.0f} tok/s streamed]"
        )
    print("self-check:", "OK" if ok else "FAILED")
    return 0 if ok else 1


def run_self_check(model_path: Path, python: str, expected_json: str | None) -> None:
    cmd = [python, str(Path(__file__).resolve()), "--check-only", str(model_path)]
    if expected_json:
        cmd += ["--expected-tokens", expected_json]
    probe = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True, check=False)
    if probe.returncode != 0:
        print(f"self-check skipped: llama_cpp is not importable by {python} (pass --check-python)")
        return
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise SystemExit(f"self-check failed (exit {rc})")


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=Config.steps, help="training steps")
    ap.add_argument(
        "--check-python",
        default=sys.executable,
        help="interpreter with llama-cpp-python for the self-check (default: this one)",
    )
    ap.add_argument("--no-check", action="store_true", help="skip the llama-cpp-python self-check")
    ap.add_argument("--check-only", metavar="GGUF", help=argparse.SUPPRESS)
    ap.add_argument("--expected-tokens", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.check_only:
        return self_check(args.check_only, args.expected_tokens)

    cfg = Config(steps=args.steps)

    def log(msg: str) -> None:
        print(msg, flush=True)

    random.seed(cfg.seed)
    t_start = time.time()

    blocks, systems = read_corpus(args.corpus)
    corpus_bytes = args.corpus.stat().st_size
    log(
        f"corpus: {args.corpus.name}, {corpus_bytes / 1024:.1f} KB, {len(blocks)} reply blocks, "
        f"{sum(len(b.questions) for b in blocks)} user phrasings, {len(systems)} system prompts"
    )

    texts = [q for b in blocks for q in b.questions + b.keywords] + [b.answer for b in blocks] * 3 + systems
    tok = Tokenizer.train(texts + ["system user assistant"] * 50, cfg.vocab_size)
    assert len(tok.pieces) == cfg.vocab_size, len(tok.pieces)
    sample = "Grüße, 東京 🚀 and VRAM"
    assert tok.decode(tok.encode(sample, bos=False)) == sample
    log(
        f"tokenizer: {len(tok.pieces)} tokens ({N_SPECIAL} control, 256 byte fallback, "
        f"{len(tok.pieces) - N_SPECIAL - 256} text pieces)"
    )

    model, final_loss, train_s = train(cfg, tok, blocks, systems, log)
    model.eval()
    log(f"trained {cfg.steps} steps in {train_s:.0f} s, final loss (smoothed) {final_loss:.3f}")
    for q in ("What is VRAM?", "what is quantization"):
        log(f"  greedy (torch): {q!r} -> {greedy_reply(model, tok, cfg, q)!r}")

    write_gguf(args.out, cfg, tok, model)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB, {n_params:,} parameters, "
        f"vocab {cfg.vocab_size}) in {time.time() - t_start:.0f} s total"
    )

    if not args.no_check:
        rng = random.Random(7)
        cases = []
        for system, turns in make_conversations(blocks, systems, 40, rng):
            text = chatml_prompt(system, turns)
            cases.append((text, tok.encode(text)))
        for text in ("Grüße, 東京 🚀", "tabs\tand\nnewlines  double  spaces", "<0x41> <s> weird"):
            cases.append((text, tok.encode(text)))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
            json.dump(cases, fh)
        try:
            run_self_check(args.out, args.check_python, fh.name)
        finally:
            os.unlink(fh.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
