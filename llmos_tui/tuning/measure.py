"""One trial: start a fresh engine child with the given parameters, load, bench, stop.

A configuration that fails — llama.cpp refuses the context, the child runs out of memory,
aborts, or runs past its time — is a *result* (``TrialResult(ok=False, outcome=..., reason=...)``
with llama.cpp's own log line as the reason), never an exception: the tuner learns from it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

from llmos_tui.engine.logreasons import classify, llama_reason  # noqa: F401 - re-exported
from llmos_tui.engine.params import EngineParams
from llmos_tui.errors import ConfigError, EngineError, LlmosError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.supervisor import Supervisor

OUTCOMES = ("ok", "oom", "crash", "timeout", "error", "refused", "budget", "slo")  # slo: broke its bound

# llama.cpp's words for a failed allocation (CUDA, Metal, CPU buffers alike)


@dataclass(frozen=True)
class BenchSpec:
    """What one trial measures (llama-bench's -p, -n, -d, -r)."""

    n_prompt: int = 128
    n_gen: int = 32
    depth: int = 0
    reps: int = 3
    warmup: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def tokens(self) -> int:
        return self.depth + self.n_prompt + self.n_gen


@dataclass
class TrialResult:
    ok: bool
    outcome: str  # one of OUTCOMES
    reason: str = ""  # for a failure: llama.cpp's own line (or ours, when it never ran)
    pp_tok_s: float | None = None  # means over the reps
    tg_tok_s: float | None = None
    ttft_ms: float | None = None
    rows: list[dict[str, object]] = field(default_factory=list)  # one per rep
    peak_rss_mb: float | None = None
    peak_vram_mb: float | None = None
    load_ms: float | None = None
    wall_s: float = 0.0
    facts: dict[str, object] = field(default_factory=dict)  # llama_cpp_version, system_info, runtime
    log_tail: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, object]:
        """What the journal keeps of a trial (plain JSON values)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("facts", "log_tail")}
        out["llama_cpp_version"] = self.facts.get("llama_cpp_version", "")
        if not self.ok:
            out["log_tail"] = self.log_tail[-8:]
        return out

    def summary(self) -> str:
        if not self.ok:
            return f"{self.outcome}: {self.reason}"
        parts = []
        if self.tg_tok_s is not None:
            parts.append(f"tg {self.tg_tok_s:.1f} tok/s")
        if self.pp_tok_s is not None:
            parts.append(f"pp {self.pp_tok_s:.1f} tok/s")
        if self.ttft_ms is not None:
            parts.append(f"ttft {self.ttft_ms:.1f} ms")
        if self.peak_rss_mb is not None:
            parts.append(f"rss {self.peak_rss_mb:.0f} MiB")
        if self.peak_vram_mb:
            parts.append(f"vram {self.peak_vram_mb:.0f} MiB")
        return ", ".join(parts)


def measure(params: EngineParams, spec: BenchSpec, *, timeout: float = 120.0,
            supervisor_factory: Callable[..., "Supervisor"] | None = None,
            on_child: Callable[["Supervisor"], None] | None = None) -> TrialResult:
    """Load ``params`` in a FRESH engine child, bench it with ``spec``, stop it. Never raises.

    ``timeout`` bounds load and bench together. ``on_child(supervisor)`` is told the trial's
    supervisor as soon as it exists (so a caller can stop a trial from another thread).
    """
    from llmos_tui.engine.supervisor import BenchTimeout, Supervisor

    started = time.monotonic()
    try:
        params = params.validate()
    except ConfigError as exc:
        return TrialResult(False, "refused", str(exc))
    n_ctx = params.n_ctx
    if n_ctx and spec.tokens > n_ctx:
        return TrialResult(False, "refused", f"the bench needs {spec.tokens} tokens of context, n_ctx is {n_ctx}")
    factory = supervisor_factory or Supervisor
    sup = factory(params, load_timeout=max(1.0, timeout))
    if on_child is not None:
        on_child(sup)

    def lines() -> list[str]:
        return [ln.text for ln in sup.logs(200)]

    def failed(outcome: str, message: str) -> TrialResult:
        tail = lines()
        outcome = classify(message, tail, default=outcome)
        if outcome == "timeout":
            reason = message
        elif outcome == "refused":
            reason = llama_reason(tail, message)
        else:  # a death: what killed it, and llama.cpp's last word when it left one
            why = llama_reason(tail[-20:])
            reason = f"{message}: {why}" if why and why not in message else message
        return TrialResult(False, outcome, reason, wall_s=time.monotonic() - started, log_tail=tail[-20:])

    try:
        try:
            sup.start(params, timeout=max(1.0, timeout))
        except ModelError as exc:  # llama.cpp refused the model or the context
            time.sleep(0.05)
            return failed("refused", str(exc))
        except EngineError as exc:
            message = str(exc)
            kind = "timeout" if "timed out" in message else ("crash" if "died" in message else "error")
            return failed(kind, message)
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            return failed("timeout", f"the model loaded, but the trial's {timeout:.0f} s were spent")
        try:
            result = sup.bench(**spec.to_dict(), timeout=remaining)
        except BenchTimeout as exc:
            return failed("timeout", str(exc))
        except EngineError as exc:
            message = str(exc)
            return failed("crash" if "died" in message else "error", message)
        if result.get("status") == "cancelled":
            return failed("error", "the benchmark was cancelled")
        if not result.get("rows"):
            return failed("error", "the benchmark measured nothing")
        return TrialResult(
            True, "ok", "",
            pp_tok_s=result.get("pp_tok_s"), tg_tok_s=result.get("tg_tok_s"), ttft_ms=result.get("ttft_ms"),
            rows=list(result.get("rows") or []), peak_rss_mb=result.get("peak_rss_mb"),
            peak_vram_mb=result.get("peak_vram_mb"), load_ms=result.get("load_ms"),
            wall_s=time.monotonic() - started,
            facts={"llama_cpp_version": result.get("llama_cpp_version", ""),
                   "system_info": result.get("system_info", ""), "runtime": dict(sup.runtime)},
        )
    except LlmosError as exc:
        return failed("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - a trial never takes the tuner down
        return failed("error", f"{type(exc).__name__}: {exc}")
    finally:
        try:
            sup.stop()
        except Exception:  # noqa: BLE001
            pass


def llama_cpp_version() -> str:
    """llama-cpp-python's version without importing it (importing loads the shared library)."""
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:  # noqa: BLE001
        return ""


def default_timeout(spec: BenchSpec, model_bytes: int) -> float:
    """A generous limit: load (about 1 s per GiB from the page cache) plus the work, floor 60 s."""
    return max(60.0, 20.0 + model_bytes / 2**30 * 5 + spec.reps * (spec.n_prompt + spec.n_gen) * 0.05)


__all__ = ["BenchSpec", "OUTCOMES", "TrialResult", "measure", "llama_reason", "llama_cpp_version"]

