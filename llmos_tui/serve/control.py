"""The daemon's control interface: HTTP over an owner-only Unix socket (the Docker/Podman shape).

``<runtime_dir>/llmos-tui-serve-<pid>.sock`` (folder 0700, socket 0600: only this user) serves
every verb of the :class:`~llmos_tui.core.operator.Operator` facade, each through the daemon's own
core, so the same change transaction (and the drain of the API's requests) is behind every one:

- ``GET /v1/llmos/snapshot``: ``Operator.snapshot()`` plus ``serve`` (the queue's numbers, the URL)
- ``POST /v1/llmos/apply`` (``{"changes": {...}, "reason": ...}``), ``/undo`` (``{"entry": "cfg:N"}``),
  ``/restart``, ``/reset_start_limit``, ``/adapt`` (``{"mode": ...}``), ``/cancel`` (the reply the
  engine streams now, whoever asked for it)
- the doctor: ``GET /v1/llmos/doctor`` (findings, actions, notices, switches), ``POST
  /v1/llmos/doctor/decide`` (``{"verb": "accept"|"reject"|"silence", "finding": N}``),
  ``/doctor/killswitch`` (``{"on": bool}``; also ``/kill_switch``), ``/doctor/canary``
- apply, undo, restart and the kill switch take an ``idempotency_key``: a retry with the same key
  gets the first answer (``"replayed": true``) and changes nothing (serve/once.py; the fleet's
  agents send one with every change)
- telemetry: ``GET /v1/llmos/samples?n=120`` (the newest samples, for a face's sparklines)
- the tuner: ``GET /v1/llmos/tune`` (its state), ``POST /v1/llmos/tune`` (start a study with the
  given options), ``/tune/stop``, ``/tune/apply_best`` (``{"report": {...}}``)
- ``GET /v1/llmos/events``: server-sent events: ``engine``, ``change``, ``doctor``, ``sample``
  (every telemetry sample) and ``tuner`` items, one JSON object per ``data:`` line
- the OpenAI routes (no token: the socket is the owner's), so an attached face's chat is one
  more client of the queue.

:class:`~llmos_tui.serve.client.DaemonClient` is the client side, and
:class:`~llmos_tui.serve.attached.AttachedOperator` the Operator surface a face drives over it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmos_tui.engine.supervisor import EngineEvent, Json
from llmos_tui.serve.api import OpenAIApi
from llmos_tui.serve.once import Once
from llmos_tui.serve.sockets import PREFIX, SUFFIX, socket_path

if TYPE_CHECKING:
    from llmos_tui.core.changes import ChangeResult
    from llmos_tui.core.operator import Operator
    from llmos_tui.doctor.loop import DoctorEvent
    from llmos_tui.telemetry.sample import Sample

__all__ = ["PREFIX", "SUFFIX", "Control", "create_control_app", "socket_path"]

UNDO_WAIT_S = 5.0
SAMPLES_MAX = 600  # the most samples one /samples answer carries
QUEUE_MAX = 1000  # events one slow listener may lag behind before it misses some
DECISIONS = ("accept", "reject", "silence")


class Control:
    """The routes, and one hub that fans the core's events out to every attached face: the core
    is subscribed once (and the tuner once it exists), whatever number of faces listen."""

    def __init__(self, operator: "Operator", api: OpenAIApi, *, url: Callable[[], str] | None = None) -> None:
        self.operator = operator
        self.api = api
        self.url = url or (lambda: "")
        self._listeners: set[Callable[[dict[str, Json]], None]] = set()
        self._lock = threading.Lock()
        self._tuner_hooked = False
        op = operator
        self._unsubscribe = op.subscribe(
            events=lambda e: self._broadcast({"type": "engine", "kind": e.kind, "ts": e.ts, "data": e.data}),
            changes=self._on_change,
            findings=self._on_finding if op.doctor is not None else None,
            samples=self._on_sample if op.sampler is not None else None)
        op.on_close(self.close)
        self.once = Once(operator.journal_writer)  # changes sent with an idempotency_key run once

    # ---- the hub ------------------------------------------------------------------------------
    def close(self) -> None:
        self._unsubscribe()

    def end_streams(self, reason: str) -> None:
        """The daemon stops: every event stream ends now (an attached face says the daemon is
        gone), so the server's shutdown never waits on a face that is only listening."""
        self._broadcast({"type": "bye", "reason": reason})

    def _broadcast(self, item: dict[str, Json]) -> None:  # core threads
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(item)

    def _on_change(self, result: "ChangeResult") -> None:
        self._broadcast({"type": "change", "data": result.to_dict()})

    def _on_finding(self, event: "DoctorEvent") -> None:
        self._broadcast({"type": "doctor", "data": _plain_event(event)})

    def _on_sample(self, sample: "Sample") -> None:
        if self._listeners:  # every second: no work while no face is attached
            self._broadcast({"type": "sample", "data": sample.to_dict()})

    def _tuner(self) -> object:
        """The daemon's tuner (built on first use), its events on the hub from then on."""
        tuner = self.operator.tuner
        with self._lock:
            if not self._tuner_hooked:
                self._tuner_hooked = True
                tuner.subscribe(lambda ev: self._broadcast({"type": "tuner", "data": _jsonable(ev)}))
        return tuner

    # ---- the Operator's verbs ---------------------------------------------------------------------
    async def snapshot(self, request: Request) -> JSONResponse:
        snap = await run_in_threadpool(self.operator.snapshot)
        snap["serve"] = {**asdict(self.api.gate.stats()), "url": self.url()}
        return JSONResponse(_jsonable(snap))

    async def _body(self, request: Request) -> dict[str, Json]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            data = None
        return data if isinstance(data, dict) else {}

    async def apply(self, request: Request) -> JSONResponse:
        body = await self._body(request)
        changes = body.get("changes")
        if not isinstance(changes, dict) or not changes:
            return JSONResponse({"ok": False, "error": "apply needs {\"changes\": {name: value}}"}, status_code=400)
        reason = str(body.get("reason") or "attached face")

        def run() -> tuple[dict[str, Json], int]:
            result = self.operator.apply(dict(changes), reason=reason, source="operator")
            return result.to_dict(), 200 if result.ok else 409

        return await self._once(body, "apply", run)

    async def undo(self, request: Request) -> JSONResponse:
        body = await self._body(request)
        entry = body.get("entry")
        if not isinstance(entry, str):
            return JSONResponse({"ok": False, "error": "undo needs {\"entry\": \"cfg:N\"}"}, status_code=400)

        def run() -> tuple[dict[str, Json], int]:
            result = self.operator.undo(entry, wait_s=UNDO_WAIT_S)
            return result.to_dict(), 200 if result.ok else 409

        return await self._once(body, "undo", run)

    async def restart(self, request: Request) -> JSONResponse:
        body = await self._body(request)
        reason = str(body.get("reason") or "attached face")

        def run() -> tuple[dict[str, Json], int]:
            error = self.operator.restart_engine(reason=reason)
            return {"ok": error is None, "message": error or "restarted"}, 200 if error is None else 409

        return await self._once(body, "restart", run)

    async def _once(self, body: dict[str, Json], verb: str,
                    run: "Callable[[], tuple[dict[str, Json], int]]") -> JSONResponse:
        """Run a change in the threadpool; with an ``idempotency_key``, once per key (serve/once.py)."""
        key = body.get("idempotency_key")
        bad = Once.check_key(key)
        if bad:
            return JSONResponse({"ok": False, "error": bad}, status_code=400)
        answer, status = await run_in_threadpool(lambda: self.once.run(key if isinstance(key, str) else None,
                                                                       verb, run))
        return JSONResponse(answer, status_code=status)

    async def reset_start_limit(self, request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "message": self.operator.reset_start_limit()})

    async def adapt(self, request: Request) -> JSONResponse:
        mode = (await self._body(request)).get("mode")
        try:
            line = await run_in_threadpool(lambda: self.operator.set_adapt_mode(str(mode)))
        except Exception as exc:  # noqa: BLE001 - a bad mode is the client's error, said in one line
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "message": line})

    async def cancel(self, request: Request) -> JSONResponse:
        self.operator.cancel()
        return JSONResponse({"ok": True, "message": "the reply in flight (if any) was cancelled"})

    # ---- the doctor ---------------------------------------------------------------------------------
    def _no_doctor(self) -> JSONResponse | None:
        if self.operator.doctor is None:
            return JSONResponse({"ok": False, "error": "the doctor is not running in this daemon"}, status_code=409)
        return None

    async def doctor(self, request: Request) -> JSONResponse:
        refused = self._no_doctor()
        if refused is not None:
            return refused
        return JSONResponse(await run_in_threadpool(self._doctor_state))

    def _doctor_state(self) -> dict[str, Json]:
        d = self.operator.doctor
        assert d is not None
        canary = d.last_canary
        return _jsonable({
            "findings": [f.to_dict() for f in d.findings()],
            "open": [f.id for f in d.findings(open_only=True)],
            "actions": list(d.actions[-50:]), "notices": list(d.notices[-20:]),
            "kill_switch": bool(d.kill_switch), "dry_run": bool(d.dry_run), "busy": bool(d.busy),
            "start_limit_hit": bool(d.start_limit_hit), "replayed": bool(d.replayed),
            "last_canary": canary.to_dict() if canary is not None else None,
            "silence_s": float(d.policy.silence_s), "engine": d.supervisor is not None,
            "repairs": {name: spec.changes for name, spec in d.registry.repairs.items()},
        })

    async def decide(self, request: Request) -> JSONResponse:
        refused = self._no_doctor()
        if refused is not None:
            return refused
        body = await self._body(request)
        verb, finding = body.get("verb"), body.get("finding")
        if verb not in DECISIONS or not isinstance(finding, int) or isinstance(finding, bool):
            return JSONResponse({"ok": False, "error": "decide needs {\"verb\": accept|reject|silence, "
                                                       "\"finding\": N}"}, status_code=400)
        d = self.operator.doctor
        assert d is not None
        seconds = body.get("seconds")

        def run() -> str | None:
            if verb == "accept":
                return d.accept(finding)
            if verb == "reject":
                return d.reject(finding)
            return d.silence(finding, float(seconds) if isinstance(seconds, (int, float)) else None)

        try:
            error = await run_in_threadpool(run)
        except Exception as exc:  # noqa: BLE001 - an unknown finding number is one line
            error = str(exc)
        return JSONResponse({"ok": error is None, "error": error}, status_code=200 if error is None else 409)

    async def kill_switch(self, request: Request) -> JSONResponse:
        """``{"on": true|false}``: the doctor's kill switch, by the core's command table (so
        read-only mode refuses turning it off, as in every face); once per ``idempotency_key``."""
        refused = self._no_doctor()
        if refused is not None:
            return refused
        body = await self._body(request)
        on = body.get("on")
        if not isinstance(on, bool):
            return JSONResponse({"ok": False, "error": "kill_switch needs {\"on\": true|false}"}, status_code=400)

        def run() -> tuple[dict[str, Json], int]:
            from llmos_tui.core.commands import COMMANDS, execute, find

            command = find(COMMANDS, "killswitch")
            assert command is not None
            outcome = execute(self.operator, command, "on" if on else "off")
            doctor = self.operator.doctor
            answer: dict[str, Json] = {"ok": outcome.ok, "message": outcome.text,
                                       "kill_switch": bool(doctor.kill_switch) if doctor is not None else None}
            if not outcome.ok:
                answer["error"] = outcome.text
            return answer, 200 if outcome.ok else 409

        return await self._once(body, "kill_switch", run)

    async def canary(self, request: Request) -> JSONResponse:
        refused = self._no_doctor()
        if refused is not None:
            return refused
        d = self.operator.doctor
        assert d is not None
        result = await run_in_threadpool(d.run_canary)
        return JSONResponse(_jsonable(result.to_dict()))

    # ---- telemetry ----------------------------------------------------------------------------------
    async def samples(self, request: Request) -> JSONResponse:
        sampler = self.operator.sampler
        if sampler is None:
            return JSONResponse({"samples": []})
        try:
            n = max(0, min(SAMPLES_MAX, int(request.query_params.get("n", "120"))))
        except ValueError:
            return JSONResponse({"error": "n must be a number of samples"}, status_code=400)
        return JSONResponse({"samples": _jsonable([s.to_dict() for s in sampler.recent(n)])})

    # ---- the tuner ----------------------------------------------------------------------------------
    async def tune_state(self, request: Request) -> JSONResponse:
        if self.operator._tuner is None:  # noqa: SLF001 - not built: no study ran, and none is built to say so
            return JSONResponse({"running": False, "study_id": None, "state": "idle", "report": None})
        tuner = self._tuner()  # built (a drift re-tune of the doctor's, say): its events on the hub from now
        report = tuner.report
        return JSONResponse(_jsonable({"running": bool(tuner.running), "study_id": tuner.study_id,
                                       "state": getattr(tuner, "state", "idle"),
                                       "report": report.to_dict() if report is not None else None}))

    async def tune(self, request: Request) -> JSONResponse:
        if self.operator.config.readonly:
            return JSONResponse({"ok": False, "error": "read-only mode: tuning (it pauses the engine) is disabled"},
                                status_code=409)
        if self.operator.mode == "replay":
            return JSONResponse({"ok": False, "error": "a replay drives no engine to tune"}, status_code=409)
        options = (await self._body(request)).get("options") or {}
        if not isinstance(options, dict):
            return JSONResponse({"ok": False, "error": "tune takes {\"options\": {...}}"}, status_code=400)
        try:
            from llmos_tui.tuning.study_config import StudyConfig

            StudyConfig.from_options(**options)  # a bad option is the client's one line, before anything runs
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        try:
            tuner = await run_in_threadpool(self._tuner)
        except Exception as exc:  # noqa: BLE001 - a tuner that cannot be built is one line
            return JSONResponse({"ok": False, "error": f"the tuner cannot be built: {exc}"}, status_code=409)
        if tuner.running:  # type: ignore[attr-defined]
            return JSONResponse({"ok": False, "error": f"a study already runs (std:{tuner.study_id})"},  # type: ignore[attr-defined]
                                status_code=409)
        tuner.start_in_background(**options)  # type: ignore[attr-defined]
        return JSONResponse({"ok": True, "message": "study started (the serving engine pauses while it runs; "
                                                    "API requests wait or get 503)"})

    async def tune_stop(self, request: Request) -> JSONResponse:
        tuner = self.operator._tuner  # noqa: SLF001
        if tuner is None or not tuner.running:
            return JSONResponse({"ok": False, "error": "no study runs"}, status_code=409)
        await run_in_threadpool(tuner.stop)
        return JSONResponse({"ok": True, "message": "stopping: the trial in flight is abandoned"})

    async def tune_apply_best(self, request: Request) -> JSONResponse:
        report = (await self._body(request)).get("report")
        if not isinstance(report, dict):
            return JSONResponse({"ok": False, "error": "apply_best needs {\"report\": {...}}"}, status_code=400)
        tuner = await run_in_threadpool(self._tuner)
        result = await run_in_threadpool(lambda: tuner.apply_best(report))  # type: ignore[attr-defined]
        return JSONResponse(_jsonable(result))

    # ---- events -------------------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Json]] = asyncio.Queue(maxsize=QUEUE_MAX)

        def put(item: dict[str, Json]) -> None:  # core threads
            loop.call_soon_threadsafe(lambda: queue.full() or queue.put_nowait(item))

        with self._lock:
            self._listeners.add(put)
        if self.operator._tuner is not None:  # noqa: SLF001 - a tuner built meanwhile: its events too
            self._tuner()

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": attached\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), 15.0)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    yield f"data: {json.dumps(item, default=str)}\n\n"
                    if item.get("type") == "bye":
                        return
            finally:
                with self._lock:
                    self._listeners.discard(put)

        return StreamingResponse(stream(), media_type="text/event-stream")


class TrialControl:
    """``POST /v1/llmos/trial``: one box's part of a fleet study (``llmos_tui.tuning.box_trial``),
    through this daemon's own core. Body: ``{"params": {...}, "spec": {...}}`` measures one trial;
    ``{"describe": true, "spec": {...}}`` says the box's hardware class and space;
    ``{"verify": {...candidate...}, "spec": {...}}`` gives the box's own A/B verdict. A trial's
    failure is a 200 with ``ok: false`` (a result); only a malformed body is a 400."""

    def __init__(self, operator: "Operator") -> None:
        self.operator = operator

    async def trial(self, request: Request) -> JSONResponse:
        from llmos_tui.tuning import box_trial

        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(spec if spec is not None else {}, dict):
            return JSONResponse({"ok": False, "error": "trial needs {\"params\": {...}, \"spec\": {...}}"},
                                status_code=400)
        spec = spec or {}
        op = self.operator
        readonly = bool(op.config.readonly)
        if body.get("describe"):
            try:
                return JSONResponse(await run_in_threadpool(lambda: box_trial.describe(op.supervisor, spec)))
            except Exception as exc:  # noqa: BLE001 - said in one line to the head
                return JSONResponse({"ok": False, "error": f"describe failed: {exc}"}, status_code=409)
        if isinstance(body.get("verify"), dict):
            cand = body["verify"]
            return JSONResponse(await run_in_threadpool(
                lambda: box_trial.verify(op.supervisor, op.changes, cand, spec, readonly=readonly)))
        params = body.get("params")
        if not isinstance(params, dict):
            return JSONResponse({"ok": False, "error": "trial needs {\"params\": {name: value}}"}, status_code=400)
        return JSONResponse(await run_in_threadpool(
            lambda: box_trial.run_trial(op.supervisor, op.changes, params, spec, readonly=readonly)))


def _plain(value: object) -> object:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return getattr(value, "__dict__", str(value))


def _jsonable(value: object) -> Json:
    """Plain JSON data (dataclasses by their to_dict, anything else as a string)."""
    return json.loads(json.dumps(value, default=_plain))  # type: ignore[no-any-return]


def _plain_event(event: "DoctorEvent") -> dict[str, Json]:
    return {"kind": event.kind, "message": event.message, "ts": event.ts,
            "finding": event.finding.to_dict() if event.finding is not None else None,
            "data": _jsonable(event.data)}


def create_control_app(operator: "Operator", api: OpenAIApi, *, url: Callable[[], str] | None = None) -> Starlette:
    control = Control(operator, api, url=url)
    verbs: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/v1/llmos/snapshot", control.snapshot, "GET"),
        ("/v1/llmos/apply", control.apply, "POST"),
        ("/v1/llmos/undo", control.undo, "POST"),
        ("/v1/llmos/restart", control.restart, "POST"),
        ("/v1/llmos/reset_start_limit", control.reset_start_limit, "POST"),
        ("/v1/llmos/adapt", control.adapt, "POST"),
        ("/v1/llmos/cancel", control.cancel, "POST"),
        ("/v1/llmos/doctor", control.doctor, "GET"),
        ("/v1/llmos/doctor/decide", control.decide, "POST"),
        ("/v1/llmos/doctor/killswitch", control.kill_switch, "POST"),
        ("/v1/llmos/kill_switch", control.kill_switch, "POST"),
        ("/v1/llmos/doctor/canary", control.canary, "POST"),
        ("/v1/llmos/samples", control.samples, "GET"),
        ("/v1/llmos/tune", control.tune_state, "GET"),
        ("/v1/llmos/tune", control.tune, "POST"),
        ("/v1/llmos/tune/stop", control.tune_stop, "POST"),
        ("/v1/llmos/tune/apply_best", control.tune_apply_best, "POST"),
        ("/v1/llmos/events", control.events, "GET"),
        ("/health", api.health, "GET"),
        ("/v1/models", api.models, "GET"),
        ("/v1/chat/completions", api.chat_completions, "POST"),
        ("/v1/completions", api.completions, "POST"),
        ("/metrics", api.metrics, "GET"),
        ("/v1/llmos/trial", TrialControl(operator).trial, "POST"),
    ]
    app = Starlette(routes=[Route(path, fn, methods=[method]) for path, fn, method in verbs])
    app.state.control = control  # the daemon ends the event streams when it stops
    return app
