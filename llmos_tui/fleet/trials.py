"""A fleet study's trial on one box: through that box's daemon, never around it.

``run_box_trial(client, params, spec)`` asks the box's ``llmos-tui serve`` daemon (``client``: a
``DaemonClient`` on its owner-only control socket) to measure one configuration. The daemon's own
core does the work under its change transaction (drain, pause, a fresh child, resume:
``llmos_tui.tuning.box_trial``), so a trial on a box is what a trial of the single-box tuner is.
The box agent (a Ray actor) calls it; so does the local executor of ``fleet.tune``.

A trial never raises: a daemon that does not answer, a refusal, a crash are results
(``ok: False`` with the reason) that the study learns from, as on one box.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Mapping

from llmos_tui.errors import LlmosError

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.serve.client import DaemonClient

JsonDict = dict[str, object]
GRACE_S = 60.0  # on top of the trial's own budget: the daemon's drain, pause and resume


def _call_timeout(spec: Mapping[str, object]) -> float:
    try:
        budget = float(spec.get("timeout_s") or 0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        budget = 0.0
    return (budget or 180.0) + GRACE_S


def run_box_trial(client: "DaemonClient", params: Mapping[str, object], spec: Mapping[str, object]) -> JsonDict:
    """One trial on the box behind ``client``. Returns a plain dict: ``ok``, ``outcome``, ``value``
    (the objective), ``values`` (tg, pp, ttft_ms), ``reason`` (on failure), ``wall_s``, ``box``
    (``spec["box"]``, or this host's name), ``params``."""
    started = time.monotonic()
    box = str(spec.get("box") or socket.gethostname())
    try:
        result = client.trial({"params": dict(params), "spec": dict(spec)}, timeout=_call_timeout(spec))
    except LlmosError as exc:
        result = {"ok": False, "outcome": "error", "value": None, "reason": str(exc)}
    if "error" in result and "outcome" not in result:  # the daemon refused the request itself
        result = {"ok": False, "outcome": "refused", "value": None, "reason": str(result["error"])}
    out: JsonDict = {"ok": bool(result.get("ok")), "outcome": str(result.get("outcome") or "error"),
                     "value": result.get("value") if result.get("ok") else None, "values": result.get("values") or {},
                     "reason": str(result.get("reason") or ""), "summary": str(result.get("summary") or ""),
                     "params": dict(params), "box": box,
                     "wall_s": round(time.monotonic() - started, 3),
                     "engine_params": result.get("engine_params")}
    return out


def describe_box(client: "DaemonClient", spec: Mapping[str, object]) -> JsonDict:
    """The box's hardware class, parameter space and running configuration (raises LlmosError)."""
    data = client.trial({"describe": True, "spec": dict(spec)}, timeout=60.0)
    if "space" not in data:
        raise LlmosError(str(data.get("error") or "the daemon did not describe the box"))
    return data


def verify_on_box(client: "DaemonClient", candidate: Mapping[str, object], spec: Mapping[str, object]) -> JsonDict:
    """The box's own A/B verdict of ``candidate`` against what runs there. Never raises."""
    rounds = int(spec.get("verify_rounds") or 12)  # type: ignore[call-overload]
    try:
        return client.trial({"verify": dict(candidate), "spec": dict(spec)},
                            timeout=_call_timeout(spec) * 2 * rounds)
    except LlmosError as exc:
        return {"significant": False, "message": f"not verified: {exc}"}


__all__ = ["run_box_trial", "describe_box", "verify_on_box"]
