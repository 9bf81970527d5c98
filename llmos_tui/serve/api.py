"""The OpenAI-compatible HTTP API (Starlette): chat and text completions, models, health, metrics.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (streamed as server-sent events
with ``"stream": true``), ``GET /v1/models``, ``GET /health`` (no token needed: a load balancer's
probe), ``GET /metrics`` (Prometheus text).

A request never reaches the engine raw: its body is size-limited (413), its JSON checked by the
schema (400), its ``max_tokens`` held to ``[serve] max_tokens`` and the context (400), a prompt
longer than the context refused (400, ``context_length_exceeded``). A streamed reply sends its
headers only once the engine produced its first piece or ended, so those refusals, a busy
engine (503) and a full queue (429) are real HTTP statuses, not errors inside a stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Callable, Union

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llmos_tui.engine.supervisor import EngineState, Json, Reply
from llmos_tui.serve.gate import ClientGone, Gate, Refusal, Turn
from llmos_tui.serve.schema import ChatRequest, CompletionRequest
from llmos_tui.serve.traffic import RequestRecord, Traffic

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from llmos_tui.core.operator import Operator
    from llmos_tui.serve.settings import ServeSettings

OPEN_PATHS = frozenset({"/health"})
CONTEXT_WORDS = ("exceed context window", "context window", "n_ctx")


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, kind: str = "invalid_request_error",
                 param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.param = status, message, code, kind, param
        self.retry_after = retry_after
        self.label = "refused"  # what the traffic record calls it

    def body(self) -> dict[str, Json]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(int(self.retry_after))} if self.retry_after else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    @classmethod
    def of(cls, refusal: Refusal) -> "ApiError":
        kind = "rate_limit_error" if refusal.status == 429 else "server_error"
        return cls(refusal.status, refusal.message, code=refusal.code, kind=kind, retry_after=refusal.retry_after)


class BearerAuth:
    """Every route but ``/health`` needs ``Authorization: Bearer <token>`` when a token is set."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token):
            error = ApiError(401, "a bearer token is required (Authorization: Bearer <token>)",
                             code="invalid_api_key", kind="authentication_error")
            response = JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class Outcome:
    """How a reply ended, in the API's words."""

    finish_reason: str | None  # stop, length (an answer), None (an error)
    error: ApiError | None
    label: str  # done, stop, length, cancelled, cut, crashed, error


class Exchange:
    """One request's reply as it streams: pieces hop from the supervisor's reader thread onto
    the loop; the client's stop strings are applied here (the engine stops on the template's)."""

    def __init__(self, turn: Turn, stops: list[str]) -> None:
        self.turn = turn
        self.stops = stops
        self.hold_back = max((len(s) for s in stops), default=1) - 1
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.text = ""  # what the client got (or will get)
        self._pending = ""
        self.stopped = False
        self.reply: Reply | None = None

    def on_piece(self, text: str) -> None:  # the supervisor's reader thread
        self.turn.progress = time.monotonic()
        self.loop.call_soon_threadsafe(self.pieces.put_nowait, text)

    def on_done(self, _reply: Reply) -> None:  # the supervisor's reader thread
        self.loop.call_soon_threadsafe(self.pieces.put_nowait, None)

    async def first_text(self) -> str | None:
        """The first text for the client, or None when the reply ended without any."""
        text: str | None = ""
        while text == "":
            text = await self.next_text()
        return text

    async def next_text(self) -> str | None:
        """The next text to hand the client ("" while held back), None at the end."""
        while True:
            piece = await self.pieces.get()
            if piece is None:
                rest, self._pending = ("" if self.stopped else self._pending), ""
                self.text += rest
                return rest if rest else None
            if self.stopped:
                continue
            text = self._filter(piece)
            if text:
                self.text += text
                return text

    def _filter(self, piece: str) -> str:
        if not self.stops:
            return piece
        self._pending += piece
        cut = min((i for i in (self._pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self._pending, self.stopped = self._pending[:cut], "", True
            self.turn.cancel()
            return out
        if self.hold_back <= 0:
            out, self._pending = self._pending, ""
            return out
        out, self._pending = self._pending[:-self.hold_back], self._pending[-self.hold_back:]
        return out

    def outcome(self) -> Outcome:
        reply = self.reply
        assert reply is not None
        if self.stopped:
            return Outcome("stop", None, "stop")
        if reply.status == "done":
            finish = reply.finish_reason if reply.finish_reason in ("stop", "length") else "stop"
            return Outcome(finish, None, finish)
        if self.turn.cut:
            return Outcome(None, ApiError(503, f"the reply was cut: {self.turn.cut}; retry", code="reply_cut",
                                          kind="server_error", retry_after=5), "cut")
        if reply.status == "cancelled":
            return Outcome("stop", None, "cancelled")
        if reply.status == "interrupted":
            return Outcome(None, ApiError(503, f"the engine stopped during this request ({reply.error}); it is "
                                          "restarting: retry", code="engine_crashed", kind="server_error",
                                          retry_after=5), "crashed")
        message = reply.error or "the engine failed this request"
        for param in ("response_format", "logit_bias", "messages"):  # the request's own fault, found in the engine's process
            if message.startswith(param + ":"):
                return Outcome(None, ApiError(400, message, code="invalid_request", param=param), "error")
        if any(word in message for word in CONTEXT_WORDS):
            return Outcome(None, ApiError(400, f"the prompt does not fit the context: {message}",
                                          code="context_length_exceeded", param="messages"), "error")
        return Outcome(None, ApiError(500, message, code="engine_error", kind="server_error"), "error")


Body = Union[ChatRequest, CompletionRequest]


log = logging.getLogger(__name__)

# how the engine's own code dies (an assert, a bad access): a crash a request's content can cause,
# unlike SIGKILL / SIGTERM, which come from outside (the OOM killer, an operator)
IN_ENGINE_SIGNALS = frozenset({"SIGABRT", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL"})
QUARANTINE_EVENT = "serve_quarantine"  # the journal's event when a request is no longer sent


class OpenAIApi:
    QUARANTINE_AFTER = 2  # crashes of the engine by the same request before it is no longer sent
    QUARANTINE_KEEP = 256  # requests remembered

    def __init__(self, operator: "Operator", gate: Gate, traffic: Traffic, settings: "ServeSettings") -> None:
        self.operator = operator
        self.supervisor = operator.supervisor
        self.gate = gate
        self.traffic = traffic
        self.settings = settings
        self.started = int(time.time())
        # a request that crashed the engine (``fingerprint``) -> the signals the engine died of
        self.crashes: "OrderedDict[str, list[str]]" = OrderedDict()

    def fingerprint(self, messages: list[dict[str, str]], sampling: dict[str, object]) -> str:
        """What reaches the engine and what it runs with, hashed: the same request sent again (a
        client's retry) is equal; after a change of the engine's configuration it is a new one (the
        crash may have been the configuration's)."""
        engine = self.supervisor.params.to_dict()
        return hashlib.sha256(json.dumps([messages, sampling, engine], sort_keys=True, default=str).encode()).hexdigest()

    def note_crash(self, fingerprint: str) -> None:
        """The engine died during this request: count it when it died in its own code (a poison
        request crashes it every time; the OpenAI client retries a 503 by itself)."""
        exit_info = self.supervisor.last_exit or {}
        sig = exit_info.get("signal")
        if sig not in IN_ENGINE_SIGNALS:
            return
        died = self.crashes.setdefault(fingerprint, [])
        died.append(str(sig))
        self.crashes.move_to_end(fingerprint)
        while len(self.crashes) > self.QUARANTINE_KEEP:
            self.crashes.popitem(last=False)
        if len(died) == self.QUARANTINE_AFTER:  # from now on refused: the operator reads why in the journal
            data: dict[str, Json] = {"request": fingerprint[:16], "signals": list(died),
                                     "last_logs": list(exit_info.get("last_logs") or [])[-5:],
                                     "engine": self.supervisor.params.to_dict()}
            log.warning("serve: request %s crashed the engine %d times (%s): not sent again",
                        fingerprint[:16], len(died), ", ".join(died))
            writer = self.traffic.writer
            if writer is not None:
                try:
                    writer.record_event(QUARANTINE_EVENT, data)
                except Exception:  # noqa: BLE001 - the journal's trouble never fails a request
                    log.exception("journaling the quarantine failed")

    def quarantined(self, fingerprint: str) -> ApiError | None:
        died = self.crashes.get(fingerprint) or []
        if len(died) < self.QUARANTINE_AFTER:
            return None
        return ApiError(422, f"this request crashed the engine {len(died)} times ({', '.join(died)}); it is not "
                        "sent again (the engine was restarted; other requests are served)",
                        code="request_crashed_engine")

    @property
    def model_id(self) -> str:
        info = self.supervisor.model_info
        return info.name if info is not None and info.name else self.supervisor.params.model_path.rsplit("/", 1)[-1]

    def n_ctx(self) -> int:
        return int(self.supervisor.stats().get("n_ctx") or self.supervisor.params.n_ctx or 0)

    # ---- plain routes ----------------------------------------------------------------------
    async def health(self, request: Request) -> JSONResponse:
        state = self.supervisor.state
        stats = self.gate.stats()
        ok = state in (EngineState.READY, EngineState.GENERATING) and not stats.closing
        status = "ok" if ok else ("loading" if state in (EngineState.LOADING, EngineState.RESTARTING,
                                                          EngineState.STOPPED, EngineState.CRASHED) else "unavailable")
        down = None if ok else self.gate.down_reason()
        if down is not None:
            status = "down"
        body = {"status": status, "engine": state.value, "model": self.model_id, "queue": stats.queued,
                "in_flight": stats.in_flight, "hold": stats.hold, "closing": stats.closing,
                **({"down": down} if down else {})}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{
            "id": self.model_id, "object": "model", "created": self.started, "owned_by": "llmos-tui",
            "meta": {"n_ctx": self.n_ctx(), "model_path": self.supervisor.params.model_path}}]})

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        data = await run_in_threadpool(generate_latest, self.traffic.registry)  # the journal is read there
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    # ---- completions -------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, "chat", ChatRequest)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, "completion", CompletionRequest)

    async def _complete(self, request: Request, route: str, schema: type[Body]) -> Response:
        t0 = time.monotonic()
        try:
            body = await self._parse(request, schema)
            messages, prompt_text = self._messages(body)
            sampling = body.engine_sampling(self._max_tokens(body))
            fingerprint = self.fingerprint(messages, sampling)
            poison = self.quarantined(fingerprint)
            if poison is not None:
                poison.label = "quarantined"
                raise poison
        except ApiError as exc:
            self.traffic.record(RequestRecord(route, exc.status, exc.label, False, wall_s=time.monotonic() - t0))
            return exc.response()
        deadline = t0 + self.gate.wait_s
        while True:
            try:
                turn = await self.gate.turn(request.is_disconnected)
                exchange = Exchange(turn, body.stops())
                try:
                    exchange.reply = await self.gate.send(turn, messages, sampling, exchange.on_piece,
                                                          exchange.on_done)
                except Refusal:
                    if time.monotonic() < deadline:  # the engine went down as this request got its turn:
                        await asyncio.sleep(0.1)  # it waits for the restart like the others
                        continue
                    raise
            except Refusal as refusal:
                error = ApiError.of(refusal)
                self.traffic.record(RequestRecord(route, error.status, "refused", body.stream,
                                                  wall_s=time.monotonic() - t0))
                return error.response()
            except ClientGone:
                self.traffic.record(RequestRecord(route, 499, "cancelled", body.stream, wall_s=time.monotonic() - t0))
                return Response(status_code=499)
            first = await exchange.first_text()
            # An engine that died before this request produced anything (it was killed just as
            # the request was sent): nothing reached the client, so it waits for the restart.
            if first is None and exchange.reply.status == "interrupted" and not turn.cut \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # the supervisor sees the exit within moments
                continue
            break
        call = _Call(self, route, body, exchange, prompt_text, t0, fingerprint)
        if body.stream:
            return await call.stream(first)
        return await call.whole(request, first)

    async def _parse(self, request: Request, schema: type[Body]) -> Body:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is {declared} bytes; the limit is {limit}", code="request_too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise ApiError(413, f"the request body is over the limit of {limit} bytes", code="request_too_large")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        try:
            body = schema.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or None
            raise ApiError(400, f"{where or 'body'}: {first.get('msg')} ({exc.error_count()} problem(s))",
                           code="invalid_request", param=where) from None
        unsupported = body.unsupported()
        if unsupported:
            raise ApiError(400, unsupported, code="unsupported", param=unsupported.split(":", 1)[0])
        return body

    def _messages(self, body: Body) -> tuple[list[dict[str, str]], str]:
        if isinstance(body, ChatRequest):
            wire = [m.wire() for m in body.messages]
            if not any(m["role"] == "user" for m in wire):
                raise ApiError(400, "messages: at least one user message is needed", code="invalid_request",
                               param="messages")
            return wire, "\n".join(f"{m['role']}: {m['content']}" for m in wire)
        # a text prompt travels as one turn; its sampling says raw_prompt, so the engine continues the text as
        # written (no chat template), as OpenAI's and llama-server's /v1/completions do
        text = body.text()
        return [{"role": "user", "content": text}], text

    def _max_tokens(self, body: Body) -> int:
        wanted = body.requested_tokens()
        limit = self.settings.max_tokens
        n_ctx = self.n_ctx()
        if wanted is None:
            return min(self.settings.default_max_tokens, n_ctx) if n_ctx else self.settings.default_max_tokens
        if wanted > limit:
            raise ApiError(400, f"max_tokens={wanted} is above this server's limit of {limit}",
                           code="max_tokens_too_large", param="max_tokens")
        if n_ctx and wanted >= n_ctx:
            raise ApiError(400, f"max_tokens={wanted} does not fit the context of {n_ctx} tokens",
                           code="context_length_exceeded", param="max_tokens")
        return wanted


class _Call:
    """One answered request: its reply as one JSON body or as server-sent events."""

    def __init__(self, api: OpenAIApi, route: str, body: Body, exchange: Exchange, prompt: str, t0: float,
                 fingerprint: str) -> None:
        self.api, self.route, self.body, self.exchange, self.prompt, self.t0 = api, route, body, exchange, prompt, t0
        self.fingerprint = fingerprint
        self.id = ("chatcmpl-" if route == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = api.model_id

    def _record(self, status: int, label: str) -> None:
        if label == "crashed":
            self.api.note_crash(self.fingerprint)
        reply = self.exchange.reply
        self.api.traffic.record(RequestRecord(
            self.route, status, label, self.body.stream, self.exchange.turn.queued_s, time.monotonic() - self.t0,
            dict(reply.metrics) if reply is not None else {}, self.prompt, self.exchange.text))

    def _usage(self) -> dict[str, int]:
        m = self.exchange.reply.metrics if self.exchange.reply is not None else {}
        prompt = int(m.get("prompt_tokens") or 0) if isinstance(m.get("prompt_tokens"), (int, float)) else 0
        gen = int(m.get("gen_tokens") or 0) if isinstance(m.get("gen_tokens"), (int, float)) else 0
        usage = {"prompt_tokens": prompt, "completion_tokens": gen, "total_tokens": prompt + gen}
        if isinstance(m.get("dropped_messages"), int) and m["dropped_messages"]:  # fit_context's (an extension)
            usage["dropped_messages"] = int(m["dropped_messages"])
        return usage

    # ---- one body -------------------------------------------------------------------------------
    async def whole(self, request: Request, first: str | None) -> Response:
        ex = self.exchange
        reader = asyncio.ensure_future(self._read_all(first))
        while True:
            done, _ = await asyncio.wait({reader}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                ex.turn.cancel()
                await reader
                self._record(499, "cancelled")
                return Response(status_code=499)
        outcome = ex.outcome()
        if outcome.error is not None:
            self._record(outcome.error.status, outcome.label)
            return outcome.error.response()
        self._record(200, outcome.label)
        if self.route == "chat":
            choice: dict[str, Json] = {"index": 0, "message": {"role": "assistant", "content": ex.text},
                                       "logprobs": None, "finish_reason": outcome.finish_reason}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": ex.text, "logprobs": None, "finish_reason": outcome.finish_reason}
            kind = "text_completion"
        return JSONResponse({"id": self.id, "object": kind, "created": self.created, "model": self.model,
                             "choices": [choice], "usage": self._usage()})

    async def _read_all(self, first: str | None) -> None:
        if first is None:
            return
        while await self.exchange.next_text() is not None:
            pass

    # ---- server-sent events -----------------------------------------------------------------------
    async def stream(self, first: str | None) -> Response:
        """The headers wait for the first piece (or the end), so errors before it stay statuses."""
        ex = self.exchange
        if first is None:
            outcome = ex.outcome()
            if outcome.error is not None:
                self._record(outcome.error.status, outcome.label)
                return outcome.error.response()
        return StreamingResponse(self._events(first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(self, first: str | None) -> AsyncIterator[str]:
        ex = self.exchange
        finished = False
        try:
            if self.route == "chat":
                yield self._event(self._chunk({"role": "assistant", "content": ""}, None))
            text = first
            while text is not None:
                if text:
                    yield self._event(self._chunk({"content": text} if self.route == "chat" else text, None))
                text = await ex.next_text()
            finished = True
            outcome = ex.outcome()
            if outcome.error is not None:
                self._record(200, outcome.label)
                yield self._event(outcome.error.body())
                return
            yield self._event(self._chunk({} if self.route == "chat" else "", outcome.finish_reason))
            options = self.body.stream_options
            if options is not None and options.include_usage:
                yield self._event({"id": self.id, "object": self._object(), "created": self.created,
                                   "model": self.model, "choices": [], "usage": self._usage()})
            yield "data: [DONE]\n\n"
            self._record(200, outcome.label)
        finally:
            if not finished:  # the client went away (or the server cut the stream): stop the engine
                ex.turn.cancel()
                self._record(499, "cancelled")

    def _object(self) -> str:
        return "chat.completion.chunk" if self.route == "chat" else "text_completion"

    def _chunk(self, delta: dict[str, str] | str, finish: str | None) -> dict[str, Json]:
        if self.route == "chat":
            choice: dict[str, Json] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
        return {"id": self.id, "object": self._object(), "created": self.created, "model": self.model,
                "choices": [choice]}

    @staticmethod
    def _event(data: dict[str, Json]) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(api: OpenAIApi, *, lifespan: "Callable[[Starlette], AbstractAsyncContextManager[None]] | None" = None,
               token: str | None = None) -> ASGIApp:
    app = Starlette(routes=[
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ], lifespan=lifespan, exception_handlers={404: _not_served, 405: _not_served})
    return BearerAuth(app, token)


async def _not_served(request: Request, exc: Exception) -> Response:
    """An unknown route or method in OpenAI's error shape (clients read ``error.message``), not
    Starlette's plain text."""
    status = getattr(exc, "status_code", 404)
    what = "this method" if status == 405 else "this route"
    return ApiError(status, f"{request.method} {request.url.path}: {what} is not served by this daemon "
                    "(it serves /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics)",
                    code="not_found" if status == 404 else "method_not_allowed").response()


__all__ = ["ApiError", "BearerAuth", "OpenAIApi", "create_app"]
