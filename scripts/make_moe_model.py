#!/usr/bin/env python3
"""Write a tiny deterministic synthetic mixture-of-experts GGUF (llama architecture with experts).

llama.cpp's ``llama`` architecture becomes a Mixtral-style MoE when the header has
``llama.expert_count``: each block then holds a router (``ffn_gate_inp``) and three stacked expert
tensors (``ffn_gate_exps``, ``ffn_up_exps``, ``ffn_down_exps``) instead of a dense feed-forward.
Those are the tensors llama.cpp's ``--n-cpu-moe`` keeps on the CPU, and the ones the engine's
``n_cpu_moe`` moves. Weights are random (seeded: the same file byte for byte on every run) and
F16/F32, so the experts' bytes are exact; **it knows nothing**: it is for tests and timing.

Its output is valid text by the bench model's recipe (scripts/make_bench_model.py): a constant
channel of the residual stream that nothing writes to bans control and non-ASCII byte tokens.

    python scripts/make_moe_model.py [--out PATH] [--layers N] [--experts E] [--force]

Importable by path: ``write_moe_model(path, MoeShape(...)) -> Path``; ``ensure_moe_model(path=None)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

MOE_NAME = "llmos moe (synthetic, random weights)"
MOE_VERSION = "1"
DEFAULT_PATH = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmos-tui" / "bench" / "moe-tiny.gguf"


def _bench_module():
    """make_bench_model.py, loaded by path (scripts/ is not a package): its vocabulary recipe."""
    name = "llmos_make_bench_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("make_bench_model.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class MoeShape(NamedTuple):
    seed: int = 20261206
    vocab_size: int = 2048
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 256  # per expert
    n_expert: int = 8
    n_expert_used: int = 2
    n_ctx_train: int = 2048
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    std: float = 0.05
    banned_weight: float = -4.0
    eos_weight: float = 0.3

    @property
    def expert_bytes_per_layer(self) -> int:
        """F16 experts: gate, up and down, each n_expert × n_ff × n_embd."""
        return 3 * self.n_expert * self.n_ff * self.n_embd * 2


def write_moe_model(path: str | os.PathLike[str], shape: MoeShape = MoeShape()) -> Path:
    import gguf
    import numpy as np

    bench = _bench_module()
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shape.seed)
    pieces, scores, types = bench.build_vocab(shape.vocab_size)
    eos = pieces.index("<|im_end|>")

    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(MOE_NAME)
    w.add_description(f"Synthetic MoE test model of llmos-tui (recipe {MOE_VERSION}): random weights, "
                      f"llama architecture with {shape.n_expert} experts ({shape.n_expert_used} used). It knows nothing.")
    w.add_string("llmos.moe.version", MOE_VERSION)
    bench.add_llama_hparams(w, shape)
    w.add_expert_feed_forward_length(shape.n_ff)
    w.add_expert_count(shape.n_expert)
    w.add_expert_used_count(shape.n_expert_used)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    bench.add_tokenizer(w, pieces, scores, types, eos)

    e, ff, ne = shape.n_embd, shape.n_ff, shape.n_expert

    def rand(*dims: int) -> "np.ndarray":
        return rng.standard_normal(dims, dtype=np.float32) * np.float32(shape.std)

    def f16(name: str, arr: "np.ndarray") -> None:
        w.add_tensor(name, arr.astype(np.float16))

    emb = rand(shape.vocab_size, e)
    emb[:, 0] = 1.0  # the constant channel
    f16("token_embd.weight", emb)
    for i in range(shape.n_layer):
        bench.add_attention(w, i, shape, rand, f16)
        # numpy shapes are ggml's dimensions reversed: ffn_gate_inp is {n_embd, n_expert} in ggml
        w.add_tensor(f"blk.{i}.ffn_gate_inp.weight", rand(ne, e) * np.float32(4.0))
        f16(f"blk.{i}.ffn_gate_exps.weight", rand(ne, ff, e))
        f16(f"blk.{i}.ffn_up_exps.weight", rand(ne, ff, e))
        down = rand(ne, e, ff)
        down[:, 0, :] = 0.0
        f16(f"blk.{i}.ffn_down_exps.weight", down)
    w.add_tensor("output_norm.weight", np.ones(e, dtype=np.float32))
    head = rand(shape.vocab_size, e) * np.float32(4.0)
    head[:, 0] = 0.0
    head[bench.banned_ids(pieces, types), 0] = shape.banned_weight
    head[eos, 0] = shape.eos_weight
    f16("output.weight", head)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def ensure_moe_model(path: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """The MoE model at ``path`` (default: the cache folder), built first when missing."""
    p = Path(path).expanduser() if path else DEFAULT_PATH
    if force or not p.is_file():
        write_moe_model(p)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_PATH), help=f"where to write it (default {DEFAULT_PATH})")
    ap.add_argument("--layers", type=int, default=MoeShape().n_layer)
    ap.add_argument("--experts", type=int, default=MoeShape().n_expert)
    ap.add_argument("--embd", type=int, default=MoeShape().n_embd)
    ap.add_argument("--ff", type=int, default=MoeShape().n_ff)
    ap.add_argument("--force", action="store_true", help="rebuild even when the file is there")
    args = ap.parse_args(argv)
    shape = MoeShape(n_layer=args.layers, n_expert=args.experts, n_embd=args.embd, n_ff=args.ff)
    t = time.time()
    p = Path(args.out).expanduser()
    if args.force or not p.is_file() or shape != MoeShape():
        write_moe_model(p, shape)
    print(f"{p}: {p.stat().st_size / 1e6:.2f} MB, {shape.n_layer} layers × {shape.n_expert} experts "
          f"({shape.expert_bytes_per_layer / 1e6:.2f} MB of experts a layer), ready in {time.time() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
