#!/usr/bin/env python3
"""Write a synthetic ~270 M-parameter llama-architecture GGUF for benchmarks (not committed: ~300 MB).

The demo model (2.5 MB) decodes at thousands of tok/s: too fast for tuning, repair or face
benchmarks to mean anything. This model has the shape of a small real one (16 layers, 1024 wide,
16 heads of 64, feed-forward 2816, 32 000-token vocabulary, Q8_0 matrices) and decodes at tens
of tok/s on two cores. Its weights are random (seeded: the file is the same byte for byte on every
run) and **it knows nothing**: it is for timing, not for answers.

Its output is always valid text: one channel of the residual stream (dimension 0) is held
constant (every embedding row has 1 there and no layer writes to it), and the output matrix gives
the byte-fallback tokens of non-ASCII bytes and the control tokens a large negative weight on that
channel, so sampling never picks them. The end-of-turn token ``<|im_end|>`` gets a small positive
weight there instead, so that chat replies end by themselves after some tens to hundreds of tokens.

    python scripts/make_bench_model.py [--out PATH] [--force]

Importable by other scripts (by path): ``ensure_bench_model(path=None) -> Path`` builds the file
once into the cache folder and returns its path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

BENCH_NAME = "llmos bench 270m (synthetic, random weights)"
BENCH_VERSION = "1"  # bump when the recipe changes: ensure_bench_model() rebuilds an older file
DEFAULT_PATH = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmos-tui" / "bench" / "bench-300m.gguf"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPACE = "\u2581"
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_BYTE = 1, 2, 3, 6


class Shape(NamedTuple):  # not a dataclass: importable by path without sys.modules
    seed: int = 20261202
    vocab_size: int = 32000
    n_embd: int = 1024
    n_layer: int = 16
    n_head: int = 16
    n_head_kv: int = 16
    n_ff: int = 2816
    n_ctx_train: int = 4096
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    std: float = 0.02
    banned_weight: float = -4.0  # on the constant channel: logits of banned tokens far below the rest
    eos_weight: float = 0.9  # on the constant channel: <|im_end|> now and then

    @property
    def n_params(self) -> int:
        per_layer = 2 * self.n_embd * self.n_embd + 2 * self.n_embd * (self.n_embd // self.n_head * self.n_head_kv)
        per_layer += 3 * self.n_embd * self.n_ff + 2 * self.n_embd
        return self.n_layer * per_layer + 2 * self.vocab_size * self.n_embd + self.n_embd


def add_llama_hparams(w, shape) -> None:  # w: a gguf.GGUFWriter
    """The llama hyper-parameters llama.cpp needs to load the file (shared with make_moe_model.py)."""
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_layer_norm_rms_eps(shape.rms_eps)
    w.add_rope_dimension_count(shape.n_embd // shape.n_head)
    w.add_rope_freq_base(shape.rope_base)
    w.add_vocab_size(shape.vocab_size)


def add_attention(w, i: int, shape, rand, put) -> None:  # w: a gguf.GGUFWriter
    """Block ``i``'s attention (norm, q, k, v, output) and its feed-forward norm, the weights drawn
    by ``rand(*dims)`` and written by ``put(name, array)`` in this order (the seeded bytes depend on
    it; shared with make_moe_model.py). The output projection leaves the constant channel alone."""
    import numpy as np

    e = shape.n_embd
    kv = e // shape.n_head * shape.n_head_kv
    w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(e, dtype=np.float32))
    put(f"blk.{i}.attn_q.weight", rand(e, e))
    put(f"blk.{i}.attn_k.weight", rand(kv, e))
    put(f"blk.{i}.attn_v.weight", rand(kv, e))
    out = rand(e, e)
    out[0, :] = 0.0  # nothing writes to the constant channel
    put(f"blk.{i}.attn_output.weight", out)
    w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(e, dtype=np.float32))


def add_tokenizer(w, pieces, scores, types, eos: int) -> None:  # w: a gguf.GGUFWriter
    """The SentencePiece-style vocabulary, its special ids and the ChatML template (shared)."""
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHATML_TEMPLATE)


def build_vocab(size: int) -> tuple[list[str], list[float], list[int]]:
    """Control tokens, 256 byte-fallback tokens, printable ASCII, then word-like pieces."""
    pieces: list[str] = list(SPECIALS)
    types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL, TT_CONTROL, TT_CONTROL]
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    types += [TT_BYTE] * 256
    seen = set(pieces)

    def add(p: str) -> None:
        if p not in seen and len(pieces) < size:
            seen.add(p)
            pieces.append(p)
            types.append(TT_NORMAL)

    for c in range(33, 127):
        add(chr(c))
    add(SPACE)
    for c in range(33, 127):
        add(SPACE + chr(c))
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    vowels = "aeiou"
    # consonant-vowel syllables read like words; then every 2- and 3-letter string
    syll = [c + v for c in letters if c not in vowels for v in vowels]
    for a in syll:
        add(SPACE + a)
        add(a)
    for a in syll:
        for b in syll:
            add(SPACE + a + b)
            add(a + b)
    for a in letters:
        for b in letters:
            add(a + b)
            add(SPACE + a + b)
            for c in letters:
                add(SPACE + a + b + c)
                add(a + b + c)
    if len(pieces) < size:
        raise SystemExit(f"vocabulary recipe too small: {len(pieces)} < {size}")
    scores = [0.0] * len(SPECIALS) + [0.0] * 256 + [-float(i) for i in range(size - len(SPECIALS) - 256)]
    return pieces, scores, types


def banned_ids(pieces: list[str], types: list[int]) -> list[int]:
    """Tokens sampling must never pick: control tokens and bytes that are not printable ASCII."""
    out = []
    for i, (p, t) in enumerate(zip(pieces, types)):
        if t in (TT_CONTROL, TT_UNKNOWN) and p != "<|im_end|>":
            out.append(i)
        elif t == TT_BYTE:
            b = int(p[3:5], 16)
            if b >= 0x80 or b < 0x20:
                out.append(i)
    return out


def write_model(path: Path, shape: Shape = Shape()) -> Path:
    import gguf
    import numpy as np
    from gguf.quants import quantize

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shape.seed)
    pieces, scores, types = build_vocab(shape.vocab_size)
    eos = pieces.index("<|im_end|>")

    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(BENCH_NAME)
    w.add_description(
        f"Synthetic benchmark model of llmos-tui (recipe {BENCH_VERSION}): random weights, "
        "llama architecture, for timing only. It knows nothing."
    )
    w.add_string("llmos.bench.version", BENCH_VERSION)
    add_llama_hparams(w, shape)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    add_tokenizer(w, pieces, scores, types, eos)

    Q8 = gguf.GGMLQuantizationType.Q8_0

    def rand(rows: int, cols: int) -> "np.ndarray":
        return rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(shape.std)

    def add_q8(name: str, arr: "np.ndarray") -> None:
        w.add_tensor(name, quantize(arr, Q8), raw_dtype=Q8)

    e, ff = shape.n_embd, shape.n_ff
    emb = rand(shape.vocab_size, e)
    emb[:, 0] = 1.0  # the constant channel
    add_q8("token_embd.weight", emb)
    del emb
    for i in range(shape.n_layer):
        add_attention(w, i, shape, rand, add_q8)
        add_q8(f"blk.{i}.ffn_gate.weight", rand(ff, e))
        add_q8(f"blk.{i}.ffn_up.weight", rand(ff, e))
        down = rand(e, ff)
        down[0, :] = 0.0
        add_q8(f"blk.{i}.ffn_down.weight", down)
    w.add_tensor("output_norm.weight", np.ones(e, dtype=np.float32))
    head = rand(shape.vocab_size, e)
    head[:, 0] = 0.0
    head[banned_ids(pieces, types), 0] = shape.banned_weight
    head[eos, 0] = shape.eos_weight
    w.add_tensor("output.weight", head.astype(np.float16))  # F16 head, as many quantised models keep it
    del head
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def _is_current(path: Path) -> bool:
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path), "r").get_field("llmos.bench.version")
        return field is not None and str(field.contents()) == BENCH_VERSION
    except Exception:
        return False


def ensure_bench_model(path: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """The bench model at ``path`` (default: the cache folder), built first when missing or stale."""
    p = Path(path).expanduser() if path else DEFAULT_PATH
    if force or not p.is_file() or not _is_current(p):
        write_model(p)
    return p


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_PATH), help=f"where to write it (default {DEFAULT_PATH})")
    ap.add_argument("--force", action="store_true", help="rebuild even when a current file is there")
    ap.add_argument("--sha", action="store_true", help="also print the file's SHA-256")
    args = ap.parse_args(argv)
    t = time.time()
    p = ensure_bench_model(args.out, force=args.force)
    size = p.stat().st_size
    print(f"{p}: {size / 1e6:.1f} MB, {Shape().n_params / 1e6:.0f} M parameters, Q8_0, "
          f"ready in {time.time() - t:.1f} s")
    if args.sha:
        print(f"sha256 {sha256(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
