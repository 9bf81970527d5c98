"""Measure a model's quality on the held-out text: perplexity, and KL divergence against a reference.

The logits come from llama.cpp (``Llama(logits_all=True)``) in a child process, like the engine:
a model that aborts llama.cpp ends the child, not the caller. The reference run (the source
model, or the f16 KV cache) saves its logits of the scored positions to a ``.npy`` file; each
candidate run reads them back chunk by chunk and compares (llama.cpp's perplexity tool does the
same with ``--kl-divergence-base``).

Scoring follows llama.cpp's perplexity tool: the text is cut into chunks of ``n_ctx`` tokens,
each evaluated from an empty cache with BOS first, and only the second half of each chunk is
scored, so every scored token has at least ``n_ctx / 2`` tokens of context.

Run as ``python -m llmos_tui.compress.evaluate JSON_ARGS`` it is the child itself; it prints
one JSON line (its result) on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

# A JSON-able record: what the child sends back, what `--json` prints.
Record: TypeAlias = dict[str, object]
# What the parent hands the child (model, text, n_ctx, settings...): JSON of mixed types.
ChildArgs: TypeAlias = dict[str, Any]

from llmos_tui.errors import LlmosError

DEFAULT_N_CTX = 256
RESULT_MARK = "LLMOS-EVAL "


class EvalError(LlmosError):
    """The evaluation could not run (the model or its context was refused, the child died)."""


@dataclass
class EvalResult:
    model: str
    ok: bool
    reason: str = ""  # why not, in llama.cpp's words
    perplexity: float | None = None
    ppl_stderr: float | None = None
    n_scored: int = 0
    n_chunks: int = 0
    n_ctx: int = 0
    kld: dict[str, float | int] | None = None  # KLStats.to_dict() against the reference, when one was given
    load_ms: float | None = None
    seconds: float = 0.0
    settings: Record = field(default_factory=dict)

    def to_dict(self) -> Record:
        return asdict(self)


def heldout_path() -> Path:
    """The held-out English text the package ships (not the demo model's training corpus)."""
    return Path(str(resources.files("llmos_tui") / "data" / "heldout.txt"))


def heldout_text() -> str:
    return heldout_path().read_text(encoding="utf-8")


def evaluate(
    model: str | os.PathLike[str],
    *,
    text: str | None = None,
    save_logits: str | os.PathLike[str] | None = None,
    ref_logits: str | os.PathLike[str] | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    max_chunks: int = 16,
    n_threads: int | None = None,
    n_gpu_layers: int = -1,
    type_k: str = "f16",
    type_v: str = "f16",
    flash_attn: str = "auto",
    timeout: float = 900.0,
    python: str = sys.executable,
) -> EvalResult:
    """Score ``model`` on ``text`` (default: the shipped held-out text) in a child process.

    A refused model or context is a result (``ok=False`` with llama.cpp's line), not an exception:
    a q8_0 KV cache that the model's head size does not allow is an answer worth reporting.
    """
    from llmos_tui.engine.params import CACHE_TYPES

    for name, value in (("type_k", type_k), ("type_v", type_v)):
        if value not in CACHE_TYPES:
            raise EvalError(f"{name} must be one of {', '.join(CACHE_TYPES)}, got {value!r}")
    args = {
        "model": os.fspath(model), "text": text if text is not None else heldout_text(),
        "save_logits": os.fspath(save_logits) if save_logits else None,
        "ref_logits": os.fspath(ref_logits) if ref_logits else None,
        "n_ctx": int(n_ctx), "max_chunks": int(max_chunks),
        "n_threads": int(n_threads or max(1, os.cpu_count() or 1)), "n_gpu_layers": int(n_gpu_layers),
        "type_k": CACHE_TYPES[type_k], "type_v": CACHE_TYPES[type_v], "flash_attn": flash_attn,
        "settings": {"type_k": type_k, "type_v": type_v, "flash_attn": flash_attn, "n_ctx": int(n_ctx)},
    }
    try:
        proc = subprocess.run([python, "-m", "llmos_tui.compress.evaluate"], input=json.dumps(args).encode(),
                              capture_output=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return EvalResult(os.fspath(model), False, f"evaluation ran past {timeout:.0f} s", settings=args["settings"])
    for line in reversed(proc.stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith(RESULT_MARK):
            return EvalResult(**json.loads(line[len(RESULT_MARK):]))
    log = proc.stderr.decode("utf-8", "replace").splitlines()
    how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    return EvalResult(os.fspath(model), False, f"the evaluation child died ({how}): {_why(log)}",
                      settings=args["settings"])


def _why(lines: list[str]) -> str:
    for line in reversed(lines):
        low = line.lower()
        if any(w in low for w in ("error", "failed", "assert", "requires", "not supported", "unsupported")):
            return line.strip()[:240]
    return lines[-1].strip()[:240] if lines else "no output"


# ---- the child ---------------------------------------------------------------------------
def _run_child(args: ChildArgs) -> Record:
    import numpy as np

    from llmos_tui.compress.quality import Accumulator

    started = time.perf_counter()
    out: Record = {"model": args["model"], "ok": False, "settings": args["settings"]}
    log_lines: list[str] = []
    import llama_cpp

    @llama_cpp.llama_log_callback
    def on_log(_level: int, text: bytes, _user: object) -> None:
        piece = text.decode("utf-8", "replace")
        log_lines.append(piece)

    llama_cpp.llama_log_set(on_log, None)  # keep llama.cpp's lines: the reason of a refusal is in them
    fa = args["flash_attn"]
    from llmos_tui.engine.loading import llama_defaults
    from llmos_tui.engine.params import resolve_repack

    t0 = time.perf_counter()
    try:
        with llama_defaults(flash_attn=fa, repack=resolve_repack(args.get("repack", "auto"))[0]):
            llm = llama_cpp.Llama(model_path=args["model"], n_ctx=args["n_ctx"], n_batch=args["n_ctx"],
                                  n_ubatch=args["n_ctx"], n_threads=args["n_threads"],
                                  n_threads_batch=args["n_threads"], n_gpu_layers=args["n_gpu_layers"],
                                  logits_all=True, flash_attn=fa == "on", type_k=args["type_k"],
                                  type_v=args["type_v"], verbose=True)
    except Exception as exc:  # noqa: BLE001 - a refusal is the answer
        lines = "".join(log_lines).splitlines()
        out["reason"] = f"{exc}: {_why(lines)}" if lines else str(exc)
        out["seconds"] = time.perf_counter() - started
        return out
    out["load_ms"] = (time.perf_counter() - t0) * 1000
    n_ctx = args["n_ctx"]
    tokens = llm.tokenize(args["text"].encode("utf-8"), add_bos=False, special=False)
    bos = llm.token_bos()
    body = n_ctx - 1 if bos >= 0 else n_ctx
    first = n_ctx // 2  # score the second half of each chunk
    n_chunks = min(args["max_chunks"], len(tokens) // body)
    if n_chunks < 1:
        out["reason"] = f"the text has {len(tokens)} tokens, fewer than one chunk of {n_ctx}"
        return out
    acc = Accumulator()
    saved: list[np.ndarray] = []
    ref = np.load(args["ref_logits"], mmap_mode="r") if args["ref_logits"] else None
    per_chunk = n_ctx - 1 - first
    if ref is not None and ref.shape[0] != n_chunks * per_chunk:
        out["reason"] = (f"the reference has {ref.shape[0]} scored positions, this run {n_chunks * per_chunk}: "
                         "a different text, context size or tokenizer")
        return out
    for c in range(n_chunks):
        chunk = tokens[c * body:(c + 1) * body]
        if bos >= 0:
            chunk = [bos] + chunk
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(chunk)
        logits = np.array(llm.scores[first:n_ctx - 1], dtype=np.float32)  # row j predicts token j + 1
        targets = chunk[first + 1:n_ctx]
        acc.add_nll(logits, targets)
        if ref is not None:
            acc.add_kl(np.asarray(ref[c * per_chunk:(c + 1) * per_chunk], dtype=np.float32), logits)
        if args["save_logits"]:
            saved.append(logits)
    if args["save_logits"]:
        np.save(args["save_logits"], np.concatenate(saved))
    kl = acc.kl_stats()
    out.update(ok=True, perplexity=acc.perplexity(), ppl_stderr=acc.ppl_stderr(), n_scored=acc.n_scored,
               n_chunks=n_chunks, n_ctx=n_ctx, kld=kl.to_dict() if kl else None,
               seconds=time.perf_counter() - started)
    llm.close()
    return out


def _child_main() -> int:
    args = json.loads(sys.stdin.buffer.read())
    real_out = os.dup(1)
    os.dup2(2, 1)  # llama.cpp's prints go to the log; the result line has the real stdout alone
    try:
        result = _run_child(args)
    except Exception as exc:  # noqa: BLE001
        result = {"model": args.get("model", ""), "ok": False, "reason": f"{type(exc).__name__}: {exc}",
                  "settings": args.get("settings", {})}
    os.write(real_out, (RESULT_MARK + json.dumps(result, default=float) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
