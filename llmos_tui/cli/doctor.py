"""The `doctor`, `plugins` and `inject` subcommands: the doctor without the TUI.

``register(subparsers)`` adds them; each handler takes the parsed ``args``, returns an exit
code and prints one clear line on error. `doctor` exits by the worst severity found:
0 none or info, 1 warning, 2 error, 3 critical.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from llmos_tui.cli.support import guarded
from llmos_tui.errors import LlmosError
from llmos_tui.engine.versions import params_of

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.core.operator import Operator
    from llmos_tui.doctor import CanaryResult, DoctorEvent, Finding, PluginManager
    from llmos_tui.journal import Journal, JournalWriter

SEVERITY_MARK = {"info": "i", "warning": "!", "error": "E", "critical": "X"}


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from llmos_tui.cli import _engine_parent

    engine = _engine_parent(defaults=False)  # values given before the subcommand survive
    doctor = subparsers.add_parser(
        "doctor", parents=[engine],
        help="start the engine, run every detector once (the canary too), print the findings",
        description="Start the engine on the configured model, sample telemetry once, run every detector "
                    "once including the canary, and print the findings. Exit code: 0 none/info, 1 warning, "
                    "2 error, 3 critical.")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--no-journal", action="store_true", help="do not write the findings to the journal")
    doctor.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="model load limit (120)")
    doctor.set_defaults(func=cmd_doctor)

    plugins = subparsers.add_parser(
        "plugins", help="list doctor plugins with their origin and state (refused and failed ones too)")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    inject = subparsers.add_parser(
        "inject", parents=[engine],
        help="demo: start an engine, inject a fault, and watch the doctor repair it automatically",
        description="Start an engine, inject a fault (abort, oom, exit, hang, stall), then run the doctor in auto "
                    "mode until it repairs the engine or gives up, printing what happens.")
    inject.add_argument("kind", choices=("abort", "oom", "exit", "hang", "stall"),
                        help="the fault to inject (stall: a reply's decode stops producing tokens)")
    inject.add_argument("--timeout", type=float, default=90.0, metavar="SECONDS", help="give up after (90)")
    inject.add_argument("--dry-run", action="store_true", help="only say what the doctor would do")
    inject.add_argument("--no-journal", action="store_true", help="do not write to the journal")
    inject.set_defaults(func=cmd_inject)




def _load_plugins() -> "PluginManager":
    from llmos_tui.doctor import PluginManager

    manager = PluginManager()
    manager.load_all()
    return manager


def _doctor_ready(op: "Operator") -> bool:
    """Say the core's start-up problems; False (and the core closed) when it has no doctor."""
    for problem in op.problems:
        print(f"llmos-tui: {problem}", file=sys.stderr)
    if op.doctor is None:
        op.close()
        print("llmos-tui: error: the doctor could not be built (see above)", file=sys.stderr)
        return False
    return True


# ---- doctor -------------------------------------------------------------------------------
def _doctor(args: argparse.Namespace) -> int:
    from llmos_tui.cli import config_from_args
    from llmos_tui.core.wiring import build_core
    from llmos_tui.doctor import EXIT_CODES, Finding, worst

    config = config_from_args(args)
    # the core a TUI would run (the journal's resume rule included), its doctor not started
    op = build_core(config, "oneshot", journal=not args.no_journal)
    if not _doctor_ready(op):
        return 2
    supervisor, sampler, doctor = op.supervisor, op.sampler, op.doctor
    start_error = None
    try:
        if not args.json:
            print(f"starting the engine on {supervisor.params.model_path} ...", file=sys.stderr)
        try:
            supervisor.start(timeout=args.timeout)
        except LlmosError as exc:
            start_error = str(exc)
        sampler.poll_once()
        time.sleep(0.25)  # CPU % needs an interval
        sampler.poll_once()
        findings = doctor.run_once(force=True, decide=False)
        if start_error:
            findings.append(Finding(title=f"engine failed to start: {start_error}", severity="critical",
                                    detector="engine.start", fingerprint="engine.start"))
        plans = {}
        for f in findings:
            spec, params, skipped = doctor.plan(f) if f.repairs else (None, None, [])
            plans[f.id] = {"repair": spec.id if spec else None, "changes": spec.changes if spec else "",
                           "skipped": skipped}
        canary = doctor.last_canary
        if args.json:
            print(json.dumps({
                "findings": [{**f.to_dict(), "plan": plans.get(f.id)} for f in findings],
                "canary": canary.to_dict() if canary else None,
                "worst": worst(f.severity for f in findings),
                "plugins": [p.to_dict() for p in doctor.plugins.list()],
            }, indent=2, default=str))
        else:
            _print_findings(findings, plans, canary)
        return EXIT_CODES.get(worst(f.severity for f in findings), 0)
    finally:
        op.close()


def _print_findings(findings: "list[Finding]", plans: dict[int, dict[str, object]],
                    canary: "CanaryResult | None") -> None:
    if canary is not None:
        state = "ok" if canary.ok else f"FAILED ({canary.reason})"
        wall = f"{canary.wall_ms:.0f} ms" if canary.wall_ms is not None else "-"
        print(f"canary: {state}, {canary.gen_tokens} tokens in {wall}")
    if not findings:
        print("no findings: all detectors are content")
        return
    for f in sorted(findings, key=lambda f: f.ts):
        print(f"[{SEVERITY_MARK.get(f.severity, '?')}] {f.severity:<8} {f.detector:<22} {f.title}")
        print(f"      {f.narrated}")
        ladder = f.evidence.get("ladder")
        if isinstance(ladder, list):
            for step in ladder:
                print(f"      {step}")
        for key, value in list(f.evidence.items())[:6]:
            text = json.dumps(value, default=str)
            print(f"      {key}: {text[:110]}")
        plan = plans.get(f.id) or {}
        if plan.get("repair"):
            print(f"      -> suggested repair: {plan['repair']} ({plan['changes']})")
        elif f.repairs:
            print(f"      -> no applicable repair: {'; '.join(plan.get('skipped') or [])}")


cmd_doctor = guarded(_doctor)


# ---- plugins ------------------------------------------------------------------------------
def _plugins(args: argparse.Namespace) -> int:
    manager = _load_plugins()
    items = manager.list()
    if args.json:
        print(json.dumps([p.to_dict() for p in items], indent=2))
        return 0
    for p in items:
        provides = ", ".join(p.detectors + p.repairs) or "-"
        where = f" {p.path}" if p.path else ""
        print(f"{p.name:<24} {p.origin:<12} {p.state:<9}{where}")
        if p.state == "loaded":
            print(f"    provides: {provides[:200]}")
        if p.reason:
            print(f"    {p.reason}")
    return 0


cmd_plugins = guarded(_plugins)


# ---- inject -------------------------------------------------------------------------------
def _inject(args: argparse.Namespace) -> int:
    from llmos_tui.cli import config_from_args
    from llmos_tui.core.wiring import build_core

    config = config_from_args(args)
    # the doctor's own defaults (crash, OOM, hang: auto) — what a newcomer's TUI runs — without
    # the grace period, and with a quick periodic canary for a hang
    table = {**config.doctor, "grace_s": 0.0, "dry_run": bool(args.dry_run)}
    if args.kind == "hang":
        table.setdefault("canary_period_s", 2.0)
        table.setdefault("canary_timeout_s", 3.0)
    if args.kind == "stall":  # the forward-progress watchdog, with a short threshold for the demo
        stalled = table.get("engine.stalled")
        stalled = dict(stalled) if isinstance(stalled, dict) else ({"mode": stalled} if stalled else {})
        stalled.setdefault("stall_s", 3.0)
        table["engine.stalled"] = stalled
    table.pop("kill_switch", None)
    config.doctor = table
    # the core a TUI would run; the doctor samples the engine itself (no host telemetry needed)
    op = build_core(config, "oneshot", journal=not args.no_journal, telemetry=False, start_doctor=False)
    if not _doctor_ready(op):
        return 2
    supervisor, doctor = op.supervisor, op.doctor
    writer = op.journal_writer
    t0 = time.monotonic()

    def say(text: str) -> None:
        print(f"{time.monotonic() - t0:7.2f}s  {text}", flush=True)

    done = threading.Event()
    outcome: dict[str, str | None] = {}
    ended: list[Finding] = []

    def on_event(event: "DoctorEvent") -> None:
        f = event.finding
        if event.kind == "finding":
            say(f"finding #{f.id} [{f.severity}] {f.detector}: {f.title}")
            say(f"  {f.narrated}")
        elif event.kind == "proposed":
            say(f"proposed: {event.message}")
        elif event.kind == "action":
            say(f"action: {event.message}")
            if event.data.get("state") == "dry_run":
                outcome["result"] = "dry run"
                done.set()
        elif event.kind == "notice":
            say(f"notice: {event.message}")
        elif event.kind == "settled" and f is not None and f.detector != "doctor.plugins":
            outcome["result"] = str(event.data.get("outcome"))
            ended.append(f)
            done.set()

    supervisor.subscribe(lambda e: say(f"engine: {e.kind} {_short(e.data)}")
                         if e.kind in ("crashed", "loaded", "load_failed", "restarting") else None)
    doctor.subscribe(on_event)
    try:
        say(f"starting the engine on {supervisor.params.model_path}")
        supervisor.start()
        doctor.start()
        if args.kind == "stall":  # a stall shows only while a reply is being generated
            supervisor.inject("slow", ms=50)  # temperature 0: a reply that does not end at once
            reply = supervisor.chat([{"role": "user", "content": "Tell me about GPUs."}], max_tokens=400,
                                    temperature=0.0)
            next(iter(reply), None)
            say(f"a reply is streaming (request {reply.id})")
        say(f"injecting fault: {args.kind}")
        supervisor.inject(args.kind)
        if not done.wait(args.timeout):
            say(f"no repair settled within {args.timeout:.0f} s; engine {supervisor.state.value}")
            return 1
        if outcome.get("result") == "dry run":
            say(f"result: dry run; engine {supervisor.state.value}")
            return 0
        finding = ended[0]
        record = _journal_record(writer, finding.action_id) if writer is not None else None
        if record is not None:
            say(record.line)
        code, line = end_state(finding.state, supervisor.state.value, record,
                               [h.get("repair") for h in finding.history if h.get("what") == "applied"])
        say(line)
        return code
    finally:
        op.close()


@dataclass
class JournalRecord:
    """What the journal holds about a finding's last action (``action_state`` None: none, or it
    could not be read; ``line`` says which)."""

    action_state: str | None
    line: str


def _journal_record(writer: "JournalWriter", action_id: int | None) -> JournalRecord:
    """Read the action and the active configuration through the core's writer (after what is queued)."""
    if action_id is None:
        return JournalRecord(None, "journal: no action recorded for this finding (a journal write failed)")

    def read(j: "Journal") -> JournalRecord:
        action = j.get_action(action_id)
        active = j.active_config()
        config = (f"cfg:{active.id} ({active.standing}): {params_of(active).summary()}"
                  if active is not None else "none")
        return JournalRecord(action.state, f"journal: act:{action.id} {action.kind} {action.state}; active {config}")

    try:
        return writer.submit(read).result(30)
    except Exception as exc:  # noqa: BLE001 - said, and counted as not verified
        return JournalRecord(None, f"journal: could not be read ({exc})")


def end_state(finding_state: str, engine_state: str, record: JournalRecord | None,
              tried: list[str]) -> tuple[int, str]:
    """The exit code and the result line of `inject`: 0 and "repaired" only when the finding was
    repaired, the engine serves and the journal holds the action as verified (``record`` None:
    run with --no-journal, the doctor's word and the engine's state decide). Every other end is
    exit 1 with a line that does not say repaired."""
    repairs = f"after {len(tried)} repair(s) ({', '.join(tried) or 'none'}); engine {engine_state}"
    if finding_state != "repaired":
        return 1, f"result: {finding_state} {repairs}"
    if engine_state != "ready":
        return 1, (f"result: not serving: the doctor verified its repair but the engine is {engine_state} now "
                   f"({repairs})")
    if record is None:
        return 0, f"result: repaired {repairs} (not journaled: --no-journal)"
    if record.action_state != "verified":
        held = record.action_state or "nothing readable"
        return 1, f"result: unconfirmed: the journal holds {held} for the repair, not verified ({repairs})"
    return 0, f"result: repaired {repairs}"


def _short(data: Mapping[str, object]) -> str:
    keep = {k: data[k] for k in ("signal", "exit_code", "load_ms", "error", "reason") if data.get(k) is not None}
    return json.dumps(keep, default=str)[:160] if keep else ""


cmd_inject = guarded(_inject)
