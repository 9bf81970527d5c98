"""The daemon's control interface: HTTP over an owner-only Unix socket (the Docker/Podman shape).

``<runtime_dir>/llmos-tui-serve-<pid>.sock`` (folder 0700, socket 0600: only this user) serves

- the Operator's verbs: ``GET /v1/llmos/snapshot``, ``POST /v1/llmos/apply`` (``{"changes": {...},
  "reason": ...}``), ``/undo`` (``{"entry": "cfg:N"}``), ``/restart``, ``/reset_start_limit``,
  ``/adapt`` (``{"mode": ...}``), ``/kill_switch`` (``{"on": bool}``) — each through the daemon's
  own core, so the same change transaction (and the drain of the API's requests) is behind every
  one; apply, undo, restart and kill_switch take an ``idempotency_key`` (a retry with the same key
  gets the first answer, ``"replayed": true``, and changes nothing: serve/once.py);
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
from typing import TYPE_CHECKING, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmos_tui.engine.supervisor import EngineEvent, Json
from llmos_tui.serve.api import OpenAIApi
from llmos_tui.serve.once import Once

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
        self.once = Once(operator.journal_writer)  # changes sent with an idempotency_key run once

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

    async def kill_switch(self, request: Request) -> JSONResponse:
        """``{"on": true|false}``: the doctor's kill switch, by the core's command table (so
        read-only mode refuses turning it off, as in every face)."""
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
            return ({"ok": outcome.ok, "message": outcome.text,
                     "kill_switch": bool(doctor.kill_switch) if doctor is not None else None},
                    200 if outcome.ok else 409)

        return await self._once(body, "kill_switch", run)

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
        Route("/v1/llmos/kill_switch", control.kill_switch, methods=["POST"]),
        Route("/v1/llmos/events", control.events, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ])
