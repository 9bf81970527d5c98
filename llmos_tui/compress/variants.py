"""The variants table: each quantised file of one source, measured on this box, and a choice.

For each variant: file size, load time, prompt and generation tok/s (the tuner's bench:
``tuning.measure`` on a fresh engine child), and quality against the source on the shipped
held-out text (perplexity, and KL divergence of the next-token distributions). The operator
picks one, or gives a budget (``max_kld=0.05``: the fastest within it) and :func:`pick` does;
:func:`apply_variant` switches the engine through the change transaction (undoable).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from llmos_tui.compress.evaluate import EvalResult, evaluate
from llmos_tui.engine.params import EngineParams


@dataclass
class Variant:
    path: str
    label: str  # quantisation (f16, q8_0, ...)
    is_source: bool = False
    size_bytes: int = 0
    load_ms: float | None = None
    pp_tok_s: float | None = None
    tg_tok_s: float | None = None
    perplexity: float | None = None
    kld_mean: float | None = None
    kld_p99: float | None = None
    same_top: float | None = None
    error: str = ""  # why a measurement is missing
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _label(path: str) -> str:
    from llmos_tui.engine.gguf_info import read_model_info

    try:
        return read_model_info(path).quantization
    except Exception:  # noqa: BLE001
        return Path(path).stem


def measure_variants(
    source: str,
    variants: Sequence[str],
    *,
    base: EngineParams | None = None,
    text: str | None = None,
    n_ctx: int = 256,
    max_chunks: int = 16,
    speed: bool = True,
    n_prompt: int = 64,
    n_gen: int = 32,
    reps: int = 3,
    on_row: Callable[[Variant], None] | None = None,
) -> list[Variant]:
    """Measure the source and each variant; a failure is a row with ``error``, never an exception."""
    base = base or EngineParams()
    rows: list[Variant] = []
    with tempfile.TemporaryDirectory(prefix="llmos-kld-") as tmp:
        ref = os.path.join(tmp, "reference.npy")
        for i, path in enumerate([source, *variants]):
            v = Variant(os.path.abspath(path), _label(path), is_source=i == 0)
            try:
                v.size_bytes = os.path.getsize(path)
            except OSError as exc:
                v.error = f"cannot read {path}: {exc.strerror}"
                rows.append(v)
                continue
            if i > 0 and not os.path.exists(ref):
                v.error = "the source could not be evaluated, so there is nothing to compare with"
            else:
                res: EvalResult = evaluate(path, text=text, n_ctx=n_ctx, max_chunks=max_chunks,
                                           n_threads=base.n_threads, n_gpu_layers=base.n_gpu_layers,
                                           save_logits=ref if i == 0 else None, ref_logits=ref if i > 0 else None)
                if res.ok:
                    v.perplexity = res.perplexity
                    if res.kld:
                        v.kld_mean, v.kld_p99, v.same_top = res.kld["mean"], res.kld["p99"], res.kld["same_top"]
                    elif i == 0:
                        v.kld_mean, v.kld_p99, v.same_top = 0.0, 0.0, 1.0
                    v.extra["n_scored"] = res.n_scored
                else:
                    v.error = res.reason
            if speed:
                _measure_speed(v, base, n_prompt, n_gen, reps)
            rows.append(v)
            if on_row is not None:
                on_row(v)
    return rows


def _measure_speed(v: Variant, base: EngineParams, n_prompt: int, n_gen: int, reps: int) -> None:
    try:
        from llmos_tui.tuning.measure import BenchSpec, measure
    except ImportError:  # the tuner is not installed: size and quality only
        v.error = v.error or "speed not measured (llmos_tui.tuning.measure is missing)"
        return
    trial = measure(base.replace(model_path=v.path), BenchSpec(n_prompt=n_prompt, n_gen=n_gen, reps=reps))
    if trial.ok:
        v.load_ms, v.pp_tok_s, v.tg_tok_s = trial.load_ms, trial.pp_tok_s, trial.tg_tok_s
    else:
        v.error = (v.error + "; " if v.error else "") + f"bench {trial.outcome}: {trial.reason}"


def pick(rows: Sequence[Variant], *, max_kld: float | None = None, max_ppl_ratio: float | None = None,
         max_size: int | None = None, objective: str = "tg_tok_s") -> tuple[Variant | None, str]:
    """The fastest variant within the budget, and a line that says why (or why none)."""
    source = next((r for r in rows if r.is_source), None)
    by_size = all(getattr(r, objective) is None for r in rows)  # speed not measured: the smallest
    fits = []
    for r in rows:
        if getattr(r, objective) is None and not by_size:
            continue
        if max_kld is not None and (r.kld_mean is None or r.kld_mean > max_kld):
            continue
        if max_ppl_ratio is not None:
            if r.perplexity is None or source is None or source.perplexity is None:
                continue
            if r.perplexity / source.perplexity > max_ppl_ratio:
                continue
        if max_size is not None and r.size_bytes > max_size:
            continue
        fits.append(r)
    budget = ", ".join(b for b in (f"KLD <= {max_kld}" if max_kld is not None else "",
                                   f"perplexity <= {max_ppl_ratio}x the source" if max_ppl_ratio else "",
                                   f"size <= {max_size} B" if max_size else "") if b) or "no budget"
    if not fits:
        return None, f"no measured variant fits ({budget})"
    if by_size:
        best = min(fits, key=lambda r: r.size_bytes)
        return best, f"{best.label} is the smallest within {budget} (speed was not measured)"
    best = max(fits, key=lambda r: getattr(r, objective))
    return best, f"{best.label} is the fastest within {budget}: {getattr(best, objective):.1f} tok/s"


def table(rows: Sequence[Variant]) -> str:
    from llmos_tui.engine.gguf_info import human_bytes

    def f(x: float | int | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    head = ("VARIANT", "SIZE", "LOAD ms", "PP tok/s", "TG tok/s", "PPL", "KLD mean", "KLD p99", "SAME TOP", "FILE")
    lines = [head]
    for r in rows:
        lines.append((r.label + (" (source)" if r.is_source else ""), human_bytes(r.size_bytes), f(r.load_ms, ".0f"),
                      f(r.pp_tok_s, ".0f"), f(r.tg_tok_s, ".1f"), f(r.perplexity, ".4g"), f(r.kld_mean, ".5f"),
                      f(r.kld_p99, ".4f"), f(None if r.same_top is None else r.same_top * 100, ".1f"),
                      os.path.basename(r.path) + (f"  ({r.error})" if r.error else "")))
    widths = [max(len(line[c]) for line in lines) for c in range(len(head) - 1)]
    return "\n".join("  ".join(line[c].ljust(widths[c]) for c in range(len(widths))) + "  " + line[-1]
                     for line in lines)


def plot(rows: Sequence[Variant], *, width: int = 90, height: int = 22, color: bool = False) -> str:
    """Size against generation speed, each point named with its KLD (plotext, imported here)."""
    import plotext as plt

    pts = [r for r in rows if r.tg_tok_s is not None]
    plt.clear_figure()
    plt.plot_size(width, height)
    if pts:
        xs = [r.size_bytes / 2**20 for r in pts]
        ys = [r.tg_tok_s for r in pts]
        plt.scatter(xs, ys, marker="dot")
        for r, x, y in zip(pts, xs, ys):
            kld = "-" if r.kld_mean is None else f"{r.kld_mean:.3g}"
            plt.text(f"{r.label}:{kld}", x, y, alignment="center")
    plt.title("size / speed / quality (label: KL divergence against the source)")
    plt.xlabel("file size (MiB)")
    plt.ylabel("generation tok/s")
    plt.theme("clear")
    out = plt.build()
    return out if color else plt.uncolorize(out)


class ChangeOutcome(Protocol):
    """What the change transaction answers (``core.changes.ChangeResult``)."""

    @property
    def ok(self) -> bool: ...

    def to_dict(self) -> dict[str, object]: ...


class _ChangeTransaction(Protocol):
    def propose(self, params: Mapping[str, object], *, source: str = ..., reason: str = ...,
                kind: str = ...) -> ChangeOutcome: ...


class Switcher(Protocol):
    """The narrow face of the core that switches the served model (an ``Operator``)."""

    @property
    def changes(self) -> _ChangeTransaction: ...


def apply_variant(operator: Switcher, variant: Variant | str, *, reason: str = "") -> ChangeOutcome:
    """Switch the served model through the one change transaction (journaled, verified, undoable)."""
    path = variant.path if isinstance(variant, Variant) else os.path.abspath(variant)
    why = reason or f"switch to {os.path.basename(path)}"
    return operator.changes.propose({"model_path": path}, source="operator", kind="model_switch", reason=why)


def kv_cache_quality(model: str, *, types: Sequence[str] = ("q8_0", "q4_0"), text: str | None = None,
                     n_ctx: int = 256, max_chunks: int = 16, n_threads: int | None = None) -> list[dict[str, object]]:
    """KL divergence of a quantised KV cache against the f16 cache (flash attention on for all, so
    the cache type is the only difference). A refusal (the head size does not divide the
    quantisation block) is a row with ``refused`` and llama.cpp's reason."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="llmos-kv-") as tmp:
        ref = os.path.join(tmp, "f16.npy")
        base = evaluate(model, text=text, n_ctx=n_ctx, max_chunks=max_chunks, n_threads=n_threads,
                        flash_attn="on", save_logits=ref)
        rows.append({"cache": "f16", "ok": base.ok, "perplexity": base.perplexity, "kld": 0.0 if base.ok else None,
                     "reason": base.reason})
        for t in types:
            if not base.ok:
                rows.append({"cache": t, "ok": False, "perplexity": None, "kld": None,
                             "reason": "the f16 reference could not run"})
                continue
            res = evaluate(model, text=text, n_ctx=n_ctx, max_chunks=max_chunks, n_threads=n_threads,
                           flash_attn="on", type_k=t, type_v=t, ref_logits=ref)
            rows.append({"cache": t, "ok": res.ok, "perplexity": res.perplexity,
                         "kld": res.kld["mean"] if res.kld else None,
                         "kld_p99": res.kld["p99"] if res.kld else None,
                         "same_top": res.kld["same_top"] if res.kld else None,
                         "reason": "" if res.ok else f"refused: {res.reason}"})
    return rows
