"""The canary probe: a short fixed prompt that proves the engine answers, in time, with tokens.

Used on demand, periodically (the ``engine.canary`` detector, off while the operator
chats), and as the liveness/readiness check after every repair.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

from llmos_tui.errors import LlmosError
from llmos_tui.jsontypes import JsonDict

if TYPE_CHECKING:
    from llmos_tui.engine.supervisor import Supervisor

PROMPT = [{"role": "user", "content": "Say OK."}]


@dataclass
class CanaryResult:
    ok: bool
    reason: str = ""
    wall_ms: float | None = None
    ttft_ms: float | None = None
    gen_tokens: int = 0
    gen_tps: float | None = None
    text: str = ""
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> JsonDict:
        return asdict(self)


def wait_ready(supervisor: Supervisor, timeout: float) -> str | None:
    """Wait until the engine is ready; return why not (state) when it does not get there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = getattr(supervisor.state, "value", str(supervisor.state))
        if state == "ready":
            return None
        if state in ("crashed", "failed", "stopped"):
            return f"engine is {state}"
        time.sleep(0.02)
    return f"engine not ready after {timeout:.1f} s (state {getattr(supervisor.state, 'value', supervisor.state)})"


def run_canary(
    supervisor: Supervisor | None,
    *,
    timeout: float = 15.0,
    max_tokens: int = 8,
    min_tokens: int = 1,
    max_wall_ms: float | None = None,
    ready_timeout: float = 5.0,
    prompt: list[dict[str, str]] | None = None,
) -> CanaryResult:
    """Send the canary prompt and judge the answer. Never raises for engine trouble."""
    if supervisor is None:
        return CanaryResult(False, "no engine attached")
    why = wait_ready(supervisor, ready_timeout)
    if why:
        return CanaryResult(False, why)
    started = time.perf_counter()
    try:
        reply = supervisor.chat(prompt or PROMPT, max_tokens=max_tokens, temperature=0.0)
    except LlmosError as exc:
        return CanaryResult(False, f"could not send the canary: {exc}")
    try:
        reply.wait(timeout)
    except TimeoutError:
        supervisor.cancel()
        return CanaryResult(False, f"no complete answer within {timeout:.1f} s", wall_ms=timeout * 1000,
                            text=reply.text)
    wall_ms = (time.perf_counter() - started) * 1000
    m = reply.metrics or {}
    gen = int(m.get("gen_tokens") or m.get("sampled_tokens") or 0)
    result = CanaryResult(True, "", wall_ms, m.get("ttft_ms"), gen, m.get("gen_tps"), reply.text)
    if reply.status != "done":
        result.ok, result.reason = False, f"reply {reply.status}: {reply.error or ''}".strip(": ")
    elif gen < min_tokens:
        result.ok, result.reason = False, f"{gen} tokens generated, expected at least {min_tokens}"
    elif gen > max_tokens + 1:
        result.ok, result.reason = False, f"{gen} tokens generated, expected at most {max_tokens}"
    elif max_wall_ms is not None and wall_ms > max_wall_ms:
        result.ok, result.reason = False, f"answered in {wall_ms:.0f} ms, limit {max_wall_ms:.0f} ms"
    return result


def verify_live(supervisor: Supervisor, ready_timeout: float, canary: Callable[[], CanaryResult],
                check: Callable[[], str | None] | None = None) -> str | None:
    """After a reload or a restart: None when the engine is ready, answers the canary
    (``canary()`` -> CanaryResult: liveness) and passes ``check()`` (the metric that asked for
    the change, or None); else why not. Shared by the change transaction and the doctor."""
    why = wait_ready(supervisor, ready_timeout)
    if why:
        return why
    result = canary()
    if not result.ok:
        return f"canary: {result.reason}"
    if check is not None:
        try:
            return check()
        except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
            return f"verification raised {type(exc).__name__}: {exc}"
    return None
