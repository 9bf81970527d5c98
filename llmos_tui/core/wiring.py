"""The one composition root: builds the wired core for every face.

``build_core(config, mode=...)`` is what the TUI, the console, every subcommand, the
benchmarks and scripts call. Modes, not hand-wired copies:

- ``live``: the engine, the journal (with the resume rule), live telemetry (NVML, psutil),
  the doctor acting under its policy, the change transaction, and the local status endpoint
  that `llmos-tui status` and other tools read.
- ``replay``: as live for the engine and chat, but telemetry comes from a recorded trace and
  the doctor is *telemetry only*: it runs its detectors on the trace, never sees or acts on
  the live engine, journals nothing, and its findings are marked replayed.
- ``oneshot``: for a subcommand that runs and exits (`doctor`, `inject`, `tune`, `journal
  explain`, examples): the engine, the journal with the same resume rule as the TUI, the
  change transaction and the doctor (not started: the caller runs passes itself); telemetry
  sampled on demand, no endpoint.

A part that cannot start (a locked journal, an unreadable trace, a bad policy) is left out
with a one-line problem in ``operator.problems`` that every face shows; the engine and chat
still work.
"""

from __future__ import annotations

import logging

from llmos_tui.config import Config
from llmos_tui.core.changes import Changes
from llmos_tui.core.operator import Operator
from llmos_tui.errors import LlmosError

log = logging.getLogger("llmos_tui.wiring")

MODES = ("live", "replay", "oneshot")
RESUME_WAIT_S = 2.0  # how long the start waits for the journal's resume rule


def build_core(config: Config, mode: str = "live", *, replay: str | None = None, replay_speed: float = 1.0,
               journal: bool = True, telemetry: bool = True, doctor: bool = True, endpoint: bool | None = None,
               start_doctor: bool | None = None) -> Operator:
    """The Operator with every part of the core wired for ``mode``.

    ``journal`` / ``telemetry`` / ``doctor``: leave a part out (tests, `--no-journal`).
    ``endpoint``: publish the live state on the local socket (default: live and replay modes).
    """
    if mode not in MODES:
        raise LlmosError(f"unknown core mode {mode!r} (known: {', '.join(MODES)})")
    if mode == "replay" and not replay:
        raise LlmosError("replay mode needs a trace file (--replay FILE)")
    op = Operator(config)
    op.mode = mode
    if journal:
        _attach_journal(op)
    op.changes = Changes(op.supervisor, op.journal_writer, readonly=config.readonly, sampler=None,
                         min_ctx=config.min_ctx)
    if op.journal_link is not None:
        op.changes.journaling = op.journal_link
    if telemetry:
        _attach_telemetry(op, mode, replay, replay_speed)
        op.changes.sampler = op.sampler if mode != "replay" else None
    if doctor:
        _attach_doctor(op, mode, start=(mode != "oneshot") if start_doctor is None else start_doctor)
    if mode == "live" and config.adapt_mode != "off":
        op.set_adapt_mode(config.adapt_mode)  # the online learner: off unless the operator turns it on
    if endpoint if endpoint is not None else mode in ("live", "replay"):
        _attach_endpoint(op)
        _attach_exporter(op)
    return op


def _attach_journal(op: Operator) -> None:
    from llmos_tui.core.journaling import JournalLink, resume_params
    from llmos_tui.journal.writer import JournalWriter

    try:
        writer = JournalWriter(op.config.journal_file)
    except LlmosError as exc:
        op.problems.append(f"journal disabled: {exc}")
        return
    op.journal_writer = writer
    try:
        params, note = writer.submit(lambda j: resume_params(j, op.config.engine)).result(timeout=RESUME_WAIT_S)
    except TimeoutError:  # a busy journal (another process writing) never delays the engine start
        params, note = op.config.engine, (f"journal busy: starting with the configured settings; the journal's "
                                          f"active configuration was not read within {RESUME_WAIT_S:g} s")
    except Exception as exc:  # noqa: BLE001 - an unreadable history must not stop the engine
        params, note = op.config.engine, f"journal: cannot read the active configuration ({exc})"
    if note:
        op.supervisor.params = params
        op.problems.append(note)
    op.journal_link = JournalLink(writer, op.supervisor, op.chat)
    op.on_close(op.journal_link.close)


def _attach_telemetry(op: Operator, mode: str, replay: str | None, replay_speed: float) -> None:
    from llmos_tui.telemetry.sampler import Sampler

    if mode == "replay":
        from llmos_tui.telemetry.replay import ReplaySource

        source = ReplaySource(replay, speed=replay_speed, loop=True)  # TraceError: fatal, said once
        sampler = Sampler(source, interval=source.interval, engine_stats=None)
        op.replay = {"path": str(replay), "synthetic": bool(source.header.get("synthetic")),
                     "host": source.header.get("host"), "description": source.header.get("description", "")}
    else:
        sampler = Sampler(interval=op.config.telemetry_interval, engine_stats=op.supervisor.stats)
    op.sampler = sampler
    if op.journal_writer is not None and mode == "live":
        from llmos_tui.core.journaling import TelemetryHistory

        sampler.subscribe(TelemetryHistory(op.journal_writer))
    if mode != "oneshot":
        sampler.start()
    op.on_close(sampler.close)


def _attach_doctor(op: Operator, mode: str, *, start: bool) -> None:
    from llmos_tui.doctor import Doctor
    from llmos_tui.doctor.policy import Policy

    try:
        policy = Policy.from_config(op.config.doctor)
    except LlmosError as exc:
        op.problems.append(f"doctor disabled: {exc}")
        return
    if mode == "replay":
        # Telemetry only: the detectors read the trace; nothing acts on the live engine and
        # nothing is journaled as if this box had the trace's trouble.
        doctor = Doctor(None, op.sampler, None, policy)
        doctor.dry_run = True
        doctor.replayed = True
    else:
        doctor = Doctor(op.supervisor, op.sampler, op.journal_writer, policy, changes=op.changes)
        doctor.services["tuner"] = lambda: op.tuner  # the drift re-tune (tuning.retune) runs the core's tuner
        if op.config.readonly:
            doctor.dry_run = True  # read-only: the doctor says what it would do, and does nothing
    if start:
        doctor.start()
    else:
        doctor.attach_events()
    if mode != "replay":
        doctor.watch_chat(op.chat)
    op.doctor = doctor
    op.on_close(doctor.stop)


def _attach_endpoint(op: Operator) -> None:
    from llmos_tui.core.endpoint import StatusEndpoint

    try:
        endpoint = StatusEndpoint(op.snapshot, runtime_dir=op.config.paths.runtime_dir)
        endpoint.start()
    except OSError as exc:
        op.problems.append(f"status endpoint disabled: {exc}")
        return
    op.endpoint = endpoint
    op.on_close(endpoint.close)


def _attach_exporter(op: Operator) -> None:
    """Serve `/metrics` from a running face when ``[exporter] listen`` is set."""
    if not getattr(op.config, "exporter_listen", None):
        return  # prometheus-client is not even imported
    from llmos_tui.exporters.prometheus import attach_exporter

    attach_exporter(op)  # a taken port is one line in op.problems; it stops with the operator
