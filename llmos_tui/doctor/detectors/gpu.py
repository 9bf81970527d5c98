"""GPU health: memory pressure, thermal slowdown, power cap, XID and ECC errors."""

from __future__ import annotations

from llmos_tui.doctor.api import detector
from llmos_tui.doctor.context import DetectorContext
from llmos_tui.doctor.detectors.common import MIB, _gpus, _held
from llmos_tui.doctor.xid import ECC_LADDERS, XID_LADDERS, Ladder, xid_ladder


@detector("gpu.vram_pressure", "warning", needs=("sample",))
def vram_pressure(ctx: DetectorContext) -> list:
    """GPU memory nearly full: the next long prompt may fail to allocate."""
    warn, err = float(ctx.setting("warn_pct", 95.0)), float(ctx.setting("error_pct", 98.5))
    out = []
    for gpu in _gpus(ctx):
        frac = gpu.mem_fraction
        if frac is None:
            continue
        pct = frac * 100
        if not _held(ctx, f"vram{gpu.index}", pct >= warn, int(ctx.setting("samples", 3))):
            continue
        out.append(ctx.finding(
            f"GPU {gpu.index} memory {pct:.1f} % full",
            severity="error" if pct >= err else "warning",
            evidence={"gpu": gpu.index, "mem_used": gpu.mem_used, "mem_total": gpu.mem_total, "pct": round(pct, 2),
                      "window_pct": [round(v, 1) for v in ctx.window(f"gpu{gpu.index}.mem_pct", 5)]},
            fingerprint=f"gpu.vram_pressure.{gpu.index}",
            repairs=["engine.kv_quant", "engine.smaller_ctx"],
            fact=f"GPU {gpu.index} VRAM {pct:.0f} % full ({(gpu.mem_used or 0) / MIB:.0f} of "
                 f"{(gpu.mem_total or 0) / MIB:.0f} MiB).",
        ))
    return out


THERMAL_BITS = {0x008: "HW slowdown", 0x020: "SW thermal slowdown", 0x040: "HW thermal slowdown",
                0x080: "HW power brake"}


@detector("gpu.thermal", "warning", needs=("sample",))
def thermal(ctx: DetectorContext) -> list:
    """Clocks held down by heat (clock-event reasons) or a temperature at the GPU's own slowdown threshold."""
    out = []
    for gpu in _gpus(ctx):
        mask = gpu.clock_reasons or 0
        reasons = [word for bit, word in THERMAL_BITS.items() if mask & bit]
        near = gpu.temp is not None and gpu.temp_slowdown is not None and gpu.temp >= gpu.temp_slowdown - 2
        if not _held(ctx, f"therm{gpu.index}", bool(reasons) or near, int(ctx.setting("samples", 2))):
            continue
        hw = any(r.startswith("HW") for r in reasons)
        what = ", ".join(reasons) if reasons else "temperature at the slowdown threshold"
        out.append(ctx.finding(
            f"GPU {gpu.index} thermal slowdown: {what} ({gpu.temp:.0f} °C, slowdown at {gpu.temp_slowdown} °C)"
            if gpu.temp is not None else f"GPU {gpu.index} thermal slowdown: {what}",
            severity="error" if hw else "warning",
            evidence={"gpu": gpu.index, "temp": gpu.temp, "temp_slowdown": gpu.temp_slowdown,
                      "temp_shutdown": gpu.temp_shutdown, "clock_reasons": mask, "reasons": gpu.throttle_reasons,
                      "sm_clock": gpu.sm_clock, "sm_clock_max": gpu.sm_clock_max,
                      "temps": ctx.window(f"gpu{gpu.index}.temp", 10)},
            fingerprint=f"gpu.thermal.{gpu.index}",
            fact=f"GPU {gpu.index} clocks are held down ({what})"
                 + (f" at {gpu.temp:.0f} °C" if gpu.temp is not None else "")
                 + (f", SM clock {gpu.sm_clock} of {gpu.sm_clock_max} MHz." if gpu.sm_clock and gpu.sm_clock_max
                    else "."),
        ))
    return out


@detector("gpu.power_cap", "info", needs=("sample",))
def power_cap(ctx: DetectorContext) -> list:
    """Clocks limited by the power cap while the GPU is busy."""
    out = []
    for gpu in _gpus(ctx):
        capped = bool((gpu.clock_reasons or 0) & 0x004)
        busy = (gpu.util_gpu or 0) >= float(ctx.setting("busy_pct", 80.0))
        if not _held(ctx, f"pcap{gpu.index}", capped and busy, int(ctx.setting("samples", 5))):
            continue
        out.append(ctx.finding(
            f"GPU {gpu.index} power-capped under load ({gpu.power or 0:.0f} W of {gpu.power_limit or 0:.0f} W)",
            evidence={"gpu": gpu.index, "power": gpu.power, "power_limit": gpu.power_limit, "util": gpu.util_gpu,
                      "sm_clock": gpu.sm_clock, "sm_clock_max": gpu.sm_clock_max,
                      "power_window": ctx.window(f"gpu{gpu.index}.power", 10)},
            fingerprint=f"gpu.power_cap.{gpu.index}",
            fact=f"GPU {gpu.index} draws {gpu.power or 0:.0f} W of its {gpu.power_limit or 0:.0f} W cap at "
                 f"{gpu.util_gpu or 0:.0f} % busy, and the driver reports the power cap limiting its clocks.",
        ))
    return out


# The XID table lives in ``doctor/xid.py`` (ladders from NVIDIA's guidance); these names stay.
XID_FAILURES = {x: l.meaning for x, l in XID_LADDERS.items() if not l.doctor_acts and l.steps[0] != "watch"}
XID_APP = {x: l.meaning for x, l in XID_LADDERS.items() if x not in XID_FAILURES}
XID_CRITICAL = tuple(x for x, l in XID_LADDERS.items() if l.severity == "critical")


def _ladder_evidence(ladder: Ladder) -> dict[str, object]:
    return {"ladder": ladder.lines(), "nvidia_action": ladder.bucket,
            "doctor_does": "restart its engine" if ladder.doctor_acts else "tell (every step is the operator's)"}


def _ladder_fact(head: str, ladder: Ladder) -> str:
    who = ("the doctor restarts its engine, the rest is yours" if ladder.doctor_acts
           else "the doctor only tells; every step is yours")
    return f"{head}; NVIDIA's ladder: {ladder.short()} ({who})."


@detector("gpu.xid_ecc", "error", needs=("sample",), grace=False, hysteresis=1)
def xid_ecc(ctx: DetectorContext) -> list:
    """XID errors and ECC / row-remap state, each with its action ladder from NVIDIA's guidance."""
    out = []
    # an XID arrives in one sample; its finding stays open for hold_s after the last one seen
    hold_s = float(ctx.setting("hold_s", 600.0))
    now = ctx.sample.ts if ctx.sample is not None else ctx.now
    seen: dict[tuple[int, int], float] = ctx.memory.setdefault("xid_seen", {})  # type: ignore[assignment]
    for gpu in _gpus(ctx):
        for xid in set(gpu.xid_events or []):
            seen[(gpu.index, xid)] = now
        for key in [k for k, ts in seen.items() if now - ts > hold_s or ts > now + 1]:
            del seen[key]
        for xid in sorted(x for (index, x) in seen if index == gpu.index):
            ladder = xid_ladder(xid)
            out.append(ctx.finding(
                f"GPU {gpu.index} XID {xid}: {ladder.meaning}",
                severity=ladder.severity,
                evidence={"gpu": gpu.index, "xid": xid, "xid_events": list(gpu.xid_events), "meaning": ladder.meaning,
                          "last_seen_ts": seen[(gpu.index, xid)],
                          "dcgm": "failure" if ladder.severity == "critical" else "warning",
                          **_ladder_evidence(ladder)},
                fingerprint=f"gpu.xid.{gpu.index}.{xid}",
                repairs=["engine.restart"] if ladder.doctor_acts else [],
                fact=_ladder_fact(f"GPU {gpu.index} reported XID {xid} ({ladder.meaning})", ladder),
            ))
        prev = ctx.memory.get(f"ecc{gpu.index}")
        unc = gpu.ecc_volatile_uncorrected
        ctx.memory[f"ecc{gpu.index}"] = unc
        if unc and (prev is None or unc > prev):
            ladder = ECC_LADDERS["remap failure" if gpu.remap_failure else "ecc uncorrected"]
            out.append(ctx.finding(
                f"GPU {gpu.index} uncorrectable ECC errors: {unc}",
                severity="critical" if gpu.remap_failure else "error",
                evidence={"gpu": gpu.index, "ecc_volatile_uncorrected": unc, "previous": prev,
                          "ecc_aggregate_uncorrected": gpu.ecc_aggregate_uncorrected,
                          "remapped_uncorrected": gpu.remapped_uncorrected, "remap_pending": gpu.remap_pending,
                          "remap_failure": gpu.remap_failure, **_ladder_evidence(ladder)},
                fingerprint=f"gpu.ecc.{gpu.index}",
                fact=_ladder_fact(f"GPU {gpu.index} counted {unc} uncorrectable ECC errors"
                                  + (f" (was {prev})" if prev else ""), ladder),
            ))
        elif gpu.remap_failure:
            ladder = ECC_LADDERS["remap failure"]
            out.append(ctx.finding(
                f"GPU {gpu.index} row remapping failed", severity="critical",
                evidence={"gpu": gpu.index, "remap_failure": True, **_ladder_evidence(ladder)},
                fingerprint=f"gpu.remap.{gpu.index}",
                fact=_ladder_fact(f"GPU {gpu.index} reports a failed row remap", ladder)))
        elif gpu.remap_pending:
            ladder = ECC_LADDERS["remap pending"]
            out.append(ctx.finding(
                f"GPU {gpu.index} row remap pending a GPU reset", severity="warning",
                evidence={"gpu": gpu.index, "remap_pending": True, **_ladder_evidence(ladder)},
                fingerprint=f"gpu.remap_pending.{gpu.index}",
                fact=_ladder_fact(f"GPU {gpu.index} has a row remap waiting for a reset", ladder)))
    return out
