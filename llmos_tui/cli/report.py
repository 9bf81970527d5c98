"""`llmos-tui report --since 22:00|1h [--json|--markdown]`: what happened while you were away.

From the journal alone: the incidents (findings with the doctor's narration), the repairs
tried on them and how each ended, the configuration changes, tuning studies, the engine's
uptime and the generation speed of the replies (tok/s percentiles).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from llmos_tui.cli.support import guarded

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.journal import Journal

PROG = "llmos-tui"
UP_AFTER = {"loaded": True, "unloaded": False, "crashed": False, "restarting": False, "error": False}
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")

Report = dict[str, object]


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "report", help="what happened since a time: incidents with their narration, repairs, changes, uptime, speed",
        description="A digest from the journal: incidents (with the doctor's narration), repairs and their end "
                    "states, configuration changes, tuning, the engine's uptime and tok/s percentiles.")
    parser.add_argument("--since", default="24h", metavar="WHEN",
                        help="22:00 (the last time the clock read it), 1h, 2d, or an ISO time (default 24h)")
    parser.add_argument("--until", default=None, metavar="WHEN", help="end of the span (default now)")
    parser.add_argument("--journal", metavar="PATH", default=argparse.SUPPRESS, help="journal SQLite file")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable output")
    form.add_argument("--markdown", action="store_true", help="Markdown, to paste into a ticket or a chat")
    parser.set_defaults(func=cmd_report)


def parse_when(text: str, now: float | None = None) -> float:
    """``22:00``: the last time the local clock read 22:00 (today, or yesterday when that is
    still ahead); else what ``journal list --since`` reads (``1h``, ``2d``, an ISO time)."""
    from llmos_tui.journal.timeparse import parse_since

    now = time.time() if now is None else now
    match = _CLOCK.match(text)
    if match:
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            from llmos_tui.errors import LlmosError

            raise LlmosError(f"cannot read time {text!r}: a clock time runs from 00:00 to 23:59")
        today = datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=0, microsecond=0)
        when = today if today.timestamp() <= now else today - timedelta(days=1)
        return when.timestamp()
    return parse_since(text, now)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _uptime(events: list[dict[str, object]], since: float, until: float) -> dict[str, object]:
    up, up_s, last = False, 0.0, since
    counts: dict[str, int] = {}
    for e in events:
        ts, kind = float(e["ts"]), str(e["kind"])  # type: ignore[arg-type]
        if ts < since:
            up = UP_AFTER.get(kind, up)
            continue
        if up:
            up_s += ts - last
        last, up = ts, UP_AFTER.get(kind, up)
        counts[kind] = counts.get(kind, 0) + 1
    if up:
        up_s += until - last
    span = max(until - since, 1e-9)
    return {"up_s": round(up_s, 1), "span_s": round(until - since, 1), "up_pct": round(100 * up_s / span, 2),
            "loads": counts.get("loaded", 0), "crashes": counts.get("crashed", 0),
            "restarts": counts.get("restarting", 0), "errors": counts.get("error", 0), "up_at_end": up}


def build_report(journal: "Journal", since: float, until: float) -> Report:
    digest = journal.digest
    actions = digest.actions(since, until)
    by_finding: dict[int, list[dict[str, object]]] = {}
    repairs = []
    for a in actions:
        item = {"id": a["id"], "ts": a["ts"], "kind": a["kind"], "proposed_by": a["proposed_by"], "state": a["state"],
                "finding_id": a["finding_id"], "note": a["note"], "trail": [s["state"] for s in a["states"]]}
        repairs.append(item)
        if a["finding_id"] is not None:
            by_finding.setdefault(int(a["finding_id"]), []).append(item)
    incidents = []
    for f in digest.findings(since, until):
        evidence = f["evidence"] if isinstance(f["evidence"], dict) else {}
        tried = by_finding.get(int(f["id"]), [])
        incidents.append({
            "id": f["id"], "ts": f["ts"], "detector": f["detector"], "severity": f["severity"], "title": f["title"],
            "narration": evidence.get("narration") or f["title"],
            "narration_kind": evidence.get("narration_kind") or "fact",
            "ladder": evidence.get("ladder") or [],
            "repairs": tried,
            "end_state": tried[-1]["state"] if tried else "no repair",
        })
    changes = [{"id": c["id"], "ts": c["ts"], "source": c["source"], "standing": c["standing"],
                "parent_id": c["parent_id"], "reason": c["reason"], "note": c["note"], "active": bool(c["active"]),
                "n_ctx": c["params"].get("n_ctx") if isinstance(c["params"], dict) else None}
               for c in digest.configs(since, until)]
    studies = [{"id": s["id"], "name": s["name"], "objective": s["objective"], "started": s["started"],
                "ended": s["ended"], "trials": s["trials"]} for s in digest.studies(since, until)]
    speeds = digest.reply_speeds(since, until)
    speed: dict[str, object] = {"replies": len(speeds)}
    if speeds:
        speed.update({"p10": round(percentile(speeds, 0.1), 2), "p50": round(statistics.median(speeds), 2),
                      "p90": round(percentile(speeds, 0.9), 2), "min": round(min(speeds), 2),
                      "max": round(max(speeds), 2)})
    hooks = [{"ts": e["ts"], **(e["data"] if isinstance(e["data"], dict) else {})}
             for e in digest.events("hook", since, until)]
    telemetry: dict[str, object] = {}
    for name, how in (("gpu0.temp", "max"), ("gpu0.mem_pct", "max"), ("gpu0.power", "max"),
                      ("engine.rolling_tps", "p50"), ("host.cpu", "p50")):
        res, points = journal.rollups.series(name, since, until)
        values = [v for _, v in points]
        if values:
            telemetry[name] = {"res_s": res, how: round(max(values) if how == "max" else statistics.median(values), 2),
                               "points": len(values)}
    return {"journal": str(journal.path), "since": since, "until": until, "telemetry": telemetry,
            "uptime": _uptime(digest.life_events(since, until), since, until),
            "incidents": incidents, "repairs": repairs, "changes": changes, "tuning": studies,
            "speed": speed, "hook_failures": hooks}


def _clock(ts: object, span_s: float) -> str:
    fmt = "%H:%M:%S" if span_s <= 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(float(ts)))  # type: ignore[arg-type]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def render(report: Report, *, markdown: bool = False) -> str:
    span = float(report["until"]) - float(report["since"])  # type: ignore[arg-type]
    up: dict[str, object] = report["uptime"]  # type: ignore[assignment]
    incidents: list[dict[str, object]] = report["incidents"]  # type: ignore[assignment]
    repairs: list[dict[str, object]] = report["repairs"]  # type: ignore[assignment]
    changes: list[dict[str, object]] = report["changes"]  # type: ignore[assignment]
    tuning: list[dict[str, object]] = report["tuning"]  # type: ignore[assignment]
    speed: dict[str, object] = report["speed"]  # type: ignore[assignment]
    hooks: list[dict[str, object]] = report["hook_failures"]  # type: ignore[assignment]
    h = (lambda t: f"\n## {t}\n") if markdown else (lambda t: f"\n{t}")
    item = "- " if markdown else "  "
    sub = "  - " if markdown else "      "
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(report["since"])))  # type: ignore[arg-type]
    end = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(report["until"])))  # type: ignore[arg-type]
    lines = [("# " if markdown else "") + f"llmos-tui report: {start} to {end} ({_duration(span)})",
             f"{'' if not markdown else '_'}journal {report['journal']}{'' if not markdown else '_'}"]
    lines.append(h("engine"))
    lines.append(f"{item}up {up['up_pct']} % of the span ({_duration(float(up['up_s']))}); "  # type: ignore[arg-type]
                 f"{up['loads']} load(s), {up['crashes']} crash(es), {up['restarts']} restart(s); "
                 f"{'serving' if up['up_at_end'] else 'not serving'} at the end")
    if speed["replies"]:
        lines.append(f"{item}{speed['replies']} replies: tok/s p10 {speed['p10']}, p50 {speed['p50']}, "
                     f"p90 {speed['p90']} (min {speed['min']}, max {speed['max']})")
    else:
        lines.append(f"{item}no finished replies in the span")
    telemetry: dict[str, dict[str, object]] = report["telemetry"]  # type: ignore[assignment]
    if telemetry:
        lines.append(f"{item}telemetry (rollups): " + ", ".join(
            f"{name} {k} {v}" for name, row in telemetry.items() for k, v in row.items() if k in ("max", "p50")))
    lines.append(h(f"incidents ({len(incidents)})"))
    if not incidents:
        lines.append(f"{item}none: the doctor found nothing")
    for f in incidents:
        lines.append(f"{item}{_clock(f['ts'], span)} fnd:{f['id']} {f['severity']} {f['detector']}: {f['title']}")
        lines.append(f"{sub}{f['narration_kind']}: {f['narration']}")
        for r in f["repairs"]:  # type: ignore[attr-defined]
            lines.append(f"{sub}repair act:{r['id']} {r['kind']}: {' -> '.join(r['trail']) or r['state']}")
        if not f["repairs"]:
            lines.append(f"{sub}no repair (end state: told)")
        for step in f["ladder"]:  # type: ignore[attr-defined]
            lines.append(f"{sub}{step}")
    lines.append(h(f"repairs ({len(repairs)})"))
    if not repairs:
        lines.append(f"{item}none")
    for r in repairs:
        on = f" on fnd:{r['finding_id']}" if r["finding_id"] is not None else ""
        lines.append(f"{item}{_clock(r['ts'], span)} act:{r['id']} {r['kind']}{on} by {r['proposed_by']}: "
                     f"{r['state']}" + (f" ({r['note']})" if r["note"] else ""))
    lines.append(h(f"changes ({len(changes)})"))
    if not changes:
        lines.append(f"{item}none")
    for c in changes:
        parent = f" from cfg:{c['parent_id']}" if c["parent_id"] else ""
        why = c["reason"] or c["note"]
        lines.append(f"{item}{_clock(c['ts'], span)} cfg:{c['id']}{parent} by {c['source']}: {c['standing']}"
                     + (", active now" if c["active"] else "") + (f" ({why})" if why else ""))
    lines.append(h(f"tuning ({len(tuning)})"))
    if not tuning:
        lines.append(f"{item}none")
    for s in tuning:
        lines.append(f"{item}study {s['id']} {s['name'] or ''} ({s['objective']}): {s['trials']} trial(s)"
                     + ("" if s["ended"] else ", still running"))
    if hooks:
        lines.append(h(f"hook failures ({len(hooks)})"))
        for e in hooks:
            lines.append(f"{item}{_clock(e['ts'], span)} {e.get('hook')}: {e.get('error') or e.get('why')}")
    return "\n".join(lines)


@guarded
def cmd_report(args: argparse.Namespace) -> int:
    from llmos_tui.cli.journal import journal_path
    from llmos_tui.core.wiring import open_journal_for_reading

    now = time.time()
    since = parse_when(args.since, now)
    until = parse_when(args.until, now) if args.until else now
    path = journal_path(args)
    if not path.exists():
        print(f"{PROG}: error: no journal at {path}", file=sys.stderr)
        return 1
    journal = open_journal_for_reading(path, note=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))
    try:
        report = build_report(journal, since, until)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report, markdown=args.markdown))
    return 0
