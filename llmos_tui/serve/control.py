"""The daemon's control interface: HTTP over an owner-only Unix socket (the Docker/Podman shape).

``<runtime_dir>/llmos-tui-serve-<pid>.sock`` (folder 0700, socket 0600: only this user) serves

- the Operator's verbs: ``GET /v1/llmos/snapshot``, ``POST /v1/llmos/apply`` (``{"changes": {...},
  "reason": ...}``), ``/undo`` (``{"entry": "cfg:N"}``), ``/restart``, ``/reset_start_limit``,
  ``/adapt`` (``{"mode": ...}``) — each through the daemon's own core, so the same change
  transaction (and the drain of the API's requests) is behind every one;
- ``GET /v1/llmos/events``: server-sent events of the engine, the doctor and the changes;
- the OpenAI routes (no token: the socket is the owner's), so an attached face's chat is one
  more client of the queue.

:class:`~llmos_tui.serve.client.DaemonClient` is the client side. No face uses it yet.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmos_tui.engine.supervisor import EngineEvent, Json
from llmos_tui.serve.api import OpenAIApi

if TYPE_CHECKING:
    from llmos_tui.core.changes import ChangeResult
    from llmos_tui.core.operator import Operator
    from llmos_tui.doctor.loop import DoctorEvent

PREFIX = "llmos-tui-serve-"
SUFFIX = ".sock"
UNDO_WAIT_S = 5.0


def socket_path(runtime_dir: Path, pid: int | None = None) -> Path:
    return Path(runtime_dir) / f"{PREFIX}{pid or os.getpid()}{SUFFIX}"


class Control:
    def __init__(self, operator: "Operator", api: OpenAIApi) -> None:
        self.operator = operator
        self.api = api

    async def snapshot(self, request: Request) -> JSONResponse:
        snap = await run_in_threadpool(self.operator.snapshot)
        snap["serve"] = asdict(self.api.gate.stats())
        return JSONResponse(snap)

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
        result = await run_in_threadpool(lambda: self.operator.apply(dict(changes), reason=reason, source="operator"))
        return JSONResponse(result.to_dict(), status_code=200 if result.ok else 409)

    async def undo(self, request: Request) -> JSONResponse:
        entry = (await self._body(request)).get("entry")
        if not isinstance(entry, str):
            return JSONResponse({"ok": False, "error": "undo needs {\"entry\": \"cfg:N\"}"}, status_code=400)
        result = await run_in_threadpool(lambda: self.operator.undo(entry, wait_s=UNDO_WAIT_S))
        return JSONResponse(result.to_dict(), status_code=200 if result.ok else 409)

    async def restart(self, request: Request) -> JSONResponse:
        reason = str((await self._body(request)).get("reason") or "attached face")
        error = await run_in_threadpool(lambda: self.operator.restart_engine(reason=reason))
        return JSONResponse({"ok": error is None, "message": error or "restarted"},
                            status_code=200 if error is None else 409)

    async def reset_start_limit(self, request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "message": self.operator.reset_start_limit()})

    async def adapt(self, request: Request) -> JSONResponse:
        mode = (await self._body(request)).get("mode")
        try:
            line = await run_in_threadpool(lambda: self.operator.set_adapt_mode(str(mode)))
        except Exception as exc:  # noqa: BLE001 - a bad mode is the client's error, said in one line
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "message": line})

    async def events(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Json]] = asyncio.Queue(maxsize=1000)

        def put(item: dict[str, Json]) -> None:  # core threads
            loop.call_soon_threadsafe(lambda: queue.full() or queue.put_nowait(item))

        def on_event(event: EngineEvent) -> None:
            put({"type": "engine", "kind": event.kind, "ts": event.ts, "data": event.data})

        def on_finding(event: "DoctorEvent") -> None:
            put({"type": "doctor", "data": json.loads(json.dumps(event, default=_plain))})

        def on_change(result: "ChangeResult") -> None:
            put({"type": "change", "data": result.to_dict()})

        op = self.operator
        unsubscribe = op.subscribe(events=on_event, changes=on_change,
                                   findings=on_finding if op.doctor is not None else None)

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
            finally:
                unsubscribe()

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


def create_control_app(operator: "Operator", api: OpenAIApi) -> Starlette:
    control = Control(operator, api)
    return Starlette(routes=[
        Route("/v1/llmos/snapshot", control.snapshot, methods=["GET"]),
        Route("/v1/llmos/apply", control.apply, methods=["POST"]),
        Route("/v1/llmos/undo", control.undo, methods=["POST"]),
        Route("/v1/llmos/restart", control.restart, methods=["POST"]),
        Route("/v1/llmos/reset_start_limit", control.reset_start_limit, methods=["POST"]),
        Route("/v1/llmos/adapt", control.adapt, methods=["POST"]),
        Route("/v1/llmos/events", control.events, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/v1/llmos/trial", TrialControl(operator).trial, methods=["POST"]),
    ])
