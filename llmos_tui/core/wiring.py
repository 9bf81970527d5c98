"""The one composition root: builds the wired core for every face.

``build_core(config, mode=...)`` is what the TUI, the console, every subcommand, the
benchmarks and scripts call. It constructs every part with its collaborators (nothing is
assigned to a part after construction) and hands the finished set to :class:`Operator`.
Modes, not hand-wired copies:

- ``live``: the engine, the journal (with the resume rule), live telemetry (NVML, psutil),
  the doctor acting under its policy, the change transaction, and the local status endpoint
  that `llmos-tui status` and `llmos-tui journal undo` talk to.
- ``replay``: as live for the engine and chat, but telemetry comes from a recorded trace and
  the doctor is *telemetry only*: it runs its detectors on the trace, never sees or acts on
  the live engine, journals nothing, and its findings are marked replayed.
- ``serve``: as live, for the headless daemon (`llmos-tui serve`): the HTTP API in
  :mod:`llmos_tui.serve` is the face; the core does not know it.
- ``oneshot``: for a subcommand that runs and exits (`doctor`, `inject`, `tune`, `journal
  undo`, `journal explain`, examples): the engine, the journal with the same resume rule as
  the TUI, the change transaction and the doctor (not started: the caller runs passes
  itself); telemetry sampled on demand, no endpoint.

A part that cannot start (a locked journal, an unreadable trace, a bad policy) is left out
with a one-line problem in ``operator.problems`` that every face shows; the engine and chat
still work.

The resume rule (:func:`llmos_tui.core.journaling.resume_params`) decides what the engine
starts with: the journal's active version when it was applied on top of the settings
configured now (and it is vetted: bad, never verified, or too big for the GPU rolls back to
the last good version, said in ``problems``), else the configured settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from llmos_tui.config import Config
from llmos_tui.core.changes import Changes, Json
from llmos_tui.core.chat import ChatSession
from llmos_tui.core.operator import Operator
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import Supervisor
from llmos_tui.errors import LlmosError

if TYPE_CHECKING:
    from llmos_tui.core.endpoint import StatusEndpoint
    from llmos_tui.core.journaling import JournalLink, Resume
    from llmos_tui.doctor import Doctor
    from llmos_tui.doctor.policy import Policy
    from llmos_tui.journal.store import Journal
    from llmos_tui.journal.writer import JournalWriter
    from llmos_tui.telemetry.sampler import Sampler

log = logging.getLogger("llmos_tui.wiring")

MODES = ("live", "replay", "oneshot", "serve")
LIVE_MODES = ("live", "serve")  # the engine serves real traffic: telemetry history, the learner
FACES = ("tui", "console", "script", "serve")
RESUME_WAIT_S = 2.0  # how long the start waits for the journal's resume rule


def build_core(config: Config, mode: str = "live", *, replay: str | None = None, replay_speed: float = 1.0,
               journal: bool = True, telemetry: bool = True, doctor: bool = True, endpoint: bool | None = None,
               start_doctor: bool | None = None, face: str = "script") -> Operator:
    """The Operator with every part of the core wired for ``mode``.

    ``journal`` / ``telemetry`` / ``doctor``: leave a part out (tests, `--no-journal`).
    ``endpoint``: publish the live state on the local socket (default: live and replay modes).
    ``face``: who streams the replies (tui, console or script; the online learner's context).
    """
    if mode not in MODES:
        raise LlmosError(f"unknown core mode {mode!r} (known: {', '.join(MODES)})")
    if face not in FACES:
        raise LlmosError(f"unknown face {face!r} (known: {', '.join(FACES)})")
    if mode == "replay" and not replay:
        raise LlmosError("replay mode needs a trace file (--replay FILE)")
    if replay == "demo":  # the packaged synthetic incident trace (llmos_tui/data/demo_trace.jsonl)
        from llmos_tui.paths import DEMO_MODEL

        replay = str(DEMO_MODEL.with_name("demo_trace.jsonl"))
    problems: list[str] = []
    closers: list[Callable[[], None]] = []

    writer = _open_writer(config, problems) if journal else None
    params = _resume(writer, config, mode, telemetry, problems) if writer is not None else config.engine
    supervisor = Supervisor(params)
    chat = ChatSession(supervisor, config.chat)
    link = None
    if writer is not None:
        from llmos_tui.core.journaling import JournalLink

        link = JournalLink(writer, supervisor, chat)  # closed by Operator.close after the engine stops

    sampler, replay_info = (_sampler(config, mode, supervisor, writer, replay, replay_speed)
                            if telemetry else (None, None))
    if sampler is not None and mode == "live" and face == "tui":
        # the cockpit watches for hours: sample less while nothing changes; an engine event
        # (a request starting, a crash) takes the next sample at once
        from llmos_tui.telemetry.sampler import IdlePacing

        sampler.pacing = IdlePacing(idle_interval=max(IDLE_INTERVAL_S, config.telemetry_interval))
        closers.append(supervisor.subscribe(lambda event: sampler.wake() if event.kind != "progress" else None))
    if sampler is not None:
        closers.append(sampler.close)
    if sampler is not None and writer is not None and mode == "live":  # rollups: the flight recorder
        from llmos_tui.journal.rollups import recorder_for
        from llmos_tui.telemetry.series import sample_values

        retention = config.rollups
        writer.submit(lambda j: j.rollups.configure(retention))  # [rollups]: ages and the file's bound
        rollup = recorder_for(writer)
        sampler.subscribe(lambda sample: rollup.add(sample.ts, sample_values(sample)))
        closers.append(rollup.close)

    policy = _policy(config, problems) if doctor else None
    changes = Changes(supervisor, writer, readonly=config.readonly,
                      sampler=sampler if mode != "replay" else None, min_ctx=config.min_ctx,
                      ready_timeout_s=policy.ready_timeout_s if policy is not None else 120.0,
                      journaling=link, configured=config.engine)

    operator: Operator | None = None

    def tuner() -> object:  # the drift re-tune (tuning.retune) runs the core's tuner
        if operator is None:
            raise LlmosError("the core is still being built")
        return operator.tuner

    the_doctor = None
    if policy is not None:
        the_doctor = _doctor(mode, supervisor, sampler, writer, policy, changes, chat, config.readonly,
                             tuner, start=(mode != "oneshot") if start_doctor is None else start_doctor)
        closers.append(the_doctor.stop)
    if mode != "replay":  # [hooks]: a trace's events are not this box's
        from llmos_tui.core.hooks import attach_hooks

        attach_hooks(config, the_doctor, changes, writer, closers)

    status_endpoint = None
    if endpoint if endpoint is not None else mode in ("live", "replay", "serve"):
        from llmos_tui.core.endpoint import StatusEndpoint

        status_endpoint = StatusEndpoint(runtime_dir=config.paths.runtime_dir)

    operator = Operator(config, supervisor=supervisor, chat=chat, changes=changes, mode=mode, face=face,
                        journal_writer=writer, journal_link=link, sampler=sampler, doctor=the_doctor,
                        endpoint=status_endpoint, replay=replay_info, problems=problems, closers=closers)
    if mode in LIVE_MODES and config.adapt_mode != "off":
        operator.set_adapt_mode(config.adapt_mode)  # the online learner: off unless the operator turns it on
    if status_endpoint is not None and config.exporter_listen:
        from llmos_tui.exporters.prometheus import attach_exporter

        attach_exporter(operator)  # a taken port is one line in op.problems; it stops with the operator
    return operator


def open_journal_for_reading(path: Path, *, note: Callable[[str], object] | None = None) -> "Journal":
    """The journal for a face that only reads it (`journal list/show/export`): writable when it may
    be (an old schema gets upgraded), else read-only (``note`` is told why). Raises JournalMissing."""
    from llmos_tui.journal import Journal, JournalReadOnly

    try:
        return Journal(path, create=False)
    except JournalReadOnly as exc:
        if note is not None:
            note(f"{exc}; reading it read-only")
        return Journal(path, readonly=True)


# ---- the parts --------------------------------------------------------------------------
def _open_writer(config: Config, problems: list[str]) -> "JournalWriter | None":
    from llmos_tui.journal.writer import JournalWriter

    try:
        return JournalWriter(config.journal_file)
    except LlmosError as exc:
        problems.append(f"journal disabled: {exc}")
        return None


def _resume(writer: "JournalWriter", config: Config, mode: str, telemetry: bool, problems: list[str]) -> EngineParams:
    """The resume rule, read through the writer (never delaying the start more than RESUME_WAIT_S)."""
    from llmos_tui.core.journaling import resume_params

    configured = config.engine
    fit = _fit_check() if telemetry and mode != "replay" else None
    try:
        resume: Resume = writer.submit(lambda j: resume_params(j, configured, fit)).result(timeout=RESUME_WAIT_S)
    except TimeoutError:  # a busy journal (another process writing) never delays the engine start
        problems.append(f"journal busy: starting with the configured settings; the journal's active "
                        f"configuration was not read within {RESUME_WAIT_S:g} s")
        return configured
    except Exception as exc:  # noqa: BLE001 - an unreadable history must not stop the engine
        problems.append(f"journal: cannot read the active configuration ({exc})")
        return configured
    for line in (resume.problem, resume.note):
        if line:
            problems.append(line)
    return resume.params


def _fit_check() -> Callable[[EngineParams], str | None]:
    """Whether a version still fits in the GPU's free memory now (read once, on first use)."""
    free: list[int | None] = []

    def fit(params: EngineParams) -> str | None:
        from llmos_tui.engine import vram
        from llmos_tui.engine.gguf_info import read_model_info

        try:
            info = read_model_info(params.model_path)
        except LlmosError as exc:
            return f"its model cannot be read ({exc})"
        if not free:
            from llmos_tui.telemetry.sampler import Sampler

            with Sampler(interval=1.0) as probe:
                free.append(vram.free_gpu_memory(probe.poll_once(), None))
        why = vram.refusal(params, info, free[0])
        return f"it no longer fits: {why}" if why else None

    return fit


IDLE_INTERVAL_S = 5.0  # the TUI's sampling interval while nothing changes


def _sampler(config: Config, mode: str, supervisor: Supervisor, writer: "JournalWriter | None",
             replay: str | None, replay_speed: float) -> "tuple[Sampler, dict[str, Json] | None]":
    from llmos_tui.telemetry.sampler import Sampler

    info: dict[str, Json] | None = None
    if mode == "replay":
        from llmos_tui.telemetry.replay import ReplaySource

        assert replay is not None
        source = ReplaySource(replay, speed=replay_speed, loop=True)  # TraceError: fatal, said once
        sampler = Sampler(source, interval=source.interval, engine_stats=None)
        info = {"path": str(replay), "synthetic": bool(source.header.get("synthetic")),
                "host": source.header.get("host"), "description": source.header.get("description", "")}
    else:
        sampler = Sampler(interval=config.telemetry_interval, engine_stats=supervisor.stats)
    if writer is not None and mode in LIVE_MODES:
        from llmos_tui.core.journaling import TelemetryHistory

        sampler.subscribe(TelemetryHistory(writer))
    if mode != "oneshot":
        sampler.start()
    return sampler, info


def _policy(config: Config, problems: list[str]) -> "Policy | None":
    from llmos_tui.doctor.policy import Policy

    try:
        return Policy.from_config(config.doctor)
    except LlmosError as exc:
        problems.append(f"doctor disabled: {exc}")
        return None


def _doctor(mode: str, supervisor: Supervisor, sampler: "Sampler | None", writer: "JournalWriter | None",
            policy: "Policy", changes: Changes, chat: ChatSession, readonly: bool,
            tuner: Callable[[], object], *, start: bool) -> "Doctor":
    from llmos_tui.doctor import Doctor

    if mode == "replay":
        # Telemetry only: the detectors read the trace; nothing acts on the live engine and
        # nothing is journaled as if this box had the trace's trouble.
        doctor = Doctor(None, sampler, None, policy, changes=None, services=None, dry_run=True, replayed=True)
    else:
        # read-only: the doctor says what it would do, and does nothing
        doctor = Doctor(supervisor, sampler, writer, policy, changes=changes, services={"tuner": tuner},
                        dry_run=readonly)
    if start:
        doctor.start()
    else:
        doctor.attach_events()
    if mode != "replay":
        doctor.watch_chat(chat)
    return doctor
