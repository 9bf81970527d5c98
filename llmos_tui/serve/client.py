"""The client of a running daemon's control socket (HTTP over the owner-only Unix socket).

    from llmos_tui.serve.client import DaemonClient, find_daemons

    with DaemonClient(find_daemons(runtime_dir)[0]) as daemon:
        print(daemon.snapshot()["engine"]["state"])
        print(daemon.apply({"n_ctx": 1024}, reason="smaller context")["message"])
        print(daemon.chat([{"role": "user", "content": "What is VRAM?"}]))

What a face needs to attach: every Operator verb the socket serves, the live events, and the
chat as one more client of the daemon's queue (streamed, :meth:`DaemonClient.stream_chat`).

``readonly=True`` (``--readonly``): every verb that would change something is refused here, with
one line, before it reaches the socket; reading (snapshot, events, findings, samples) and the
chat (a request like any API client's) stay open.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import httpx

from llmos_tui.engine.supervisor import Json
from llmos_tui.errors import LlmosError
from llmos_tui.serve.sockets import find_daemons

__all__ = ["DaemonClient", "DaemonReadOnly", "find_daemons"]


class DaemonReadOnly(LlmosError):
    """A verb that changes something, asked through a read-only attachment."""


class DaemonClient:
    def __init__(self, socket: Path | str, *, timeout: float = 180.0, readonly: bool = False) -> None:
        self.socket = Path(socket)
        self.readonly = readonly
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://llmos-tui",
                                  timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def retarget(self, socket: Path | str) -> None:
        """Talk to another socket from now on (a daemon restarted under a new pid): every part
        holding this client follows it."""
        old, self.socket = self._http, Path(socket)
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://llmos-tui",
                                  timeout=old.timeout)
        old.close()

    def __enter__(self) -> "DaemonClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------------
    def _json(self, response: httpx.Response) -> dict[str, Json]:
        try:
            data = response.json()
        except ValueError:
            raise LlmosError(f"the daemon answered {response.status_code} without JSON") from None
        if not isinstance(data, dict):
            raise LlmosError("the daemon answered something other than a JSON object")
        return data

    def _did_not_answer(self, exc: Exception) -> LlmosError:
        return LlmosError(f"the daemon at {self.socket} did not answer: {exc}")

    def _get(self, path: str, **params: str | int) -> dict[str, Json]:
        try:
            return self._json(self._http.get(path, params=params or None))
        except httpx.HTTPError as exc:
            raise self._did_not_answer(exc) from None

    def _post(self, path: str, body: dict[str, Json] | None = None) -> dict[str, Json]:
        try:
            return self._json(self._http.post(path, json=body or {}))
        except httpx.HTTPError as exc:
            raise self._did_not_answer(exc) from None

    def _change(self, verb: str, path: str, body: dict[str, Json] | None = None) -> dict[str, Json]:
        """A verb that changes something: refused at once when attached read-only."""
        if self.readonly:
            raise DaemonReadOnly(f"read-only attach: {verb} is disabled (it would change the daemon)")
        return self._post(path, body)

    # ---- reading ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Json]:
        return self._get("/v1/llmos/snapshot")

    def health(self) -> dict[str, Json]:
        return self._get("/health")

    def doctor(self) -> dict[str, Json]:
        """Findings (all, as dicts), actions, notices, the switches, the repairs' descriptions."""
        return self._get("/v1/llmos/doctor")

    def samples(self, n: int = 120) -> list[dict[str, Json]]:
        items = self._get("/v1/llmos/samples", n=n).get("samples")
        return [s for s in items if isinstance(s, dict)] if isinstance(items, list) else []

    def tune_state(self) -> dict[str, Json]:
        return self._get("/v1/llmos/tune")

    def events(self, on_open: Callable[[], object] | None = None) -> Iterator[dict[str, Json]]:
        """The daemon's engine, change, doctor, sample and tuner events as they happen (blocks;
        break or close the client to stop). ``on_open``: called once the daemon took the stream."""
        with self._http.stream("GET", "/v1/llmos/events", timeout=httpx.Timeout(10.0, read=None)) as response:
            if on_open is not None:
                on_open()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    item = json.loads(line[len("data: "):])
                    if isinstance(item, dict):
                        yield item

    # ---- the Operator's verbs -------------------------------------------------------------------------
    def apply(self, changes: dict[str, Json], *, reason: str = "") -> dict[str, Json]:
        """A ChangeResult as a dict (``ok``, ``state``, ``message``)."""
        return self._change("apply", "/v1/llmos/apply", {"changes": changes, "reason": reason})

    def undo(self, entry: str) -> dict[str, Json]:
        return self._change("undo", "/v1/llmos/undo", {"entry": entry})

    def restart(self, reason: str = "") -> dict[str, Json]:
        return self._change("restart", "/v1/llmos/restart", {"reason": reason})

    def reset_start_limit(self) -> str:
        return str(self._change("reset-limit", "/v1/llmos/reset_start_limit").get("message"))

    def set_adapt_mode(self, mode: str) -> dict[str, Json]:
        if self.readonly and mode == "on":
            raise DaemonReadOnly("read-only attach: adapt on is disabled (it would change the engine's threads)")
        return self._post("/v1/llmos/adapt", {"mode": mode})

    def cancel(self) -> dict[str, Json]:
        return self._change("cancel", "/v1/llmos/cancel")

    def decide(self, verb: str, finding: int, seconds: float | None = None) -> str | None:
        """Accept, reject or silence a finding: None, or why not (one line)."""
        body: dict[str, Json] = {"verb": verb, "finding": finding}
        if seconds is not None:
            body["seconds"] = seconds
        answer = self._change(verb, "/v1/llmos/doctor/decide", body)
        return None if answer.get("ok") else str(answer.get("error"))

    def set_kill_switch(self, on: bool) -> bool:
        if not on and self.readonly:
            raise DaemonReadOnly("read-only attach: turning the kill switch off is disabled")
        answer = self._post("/v1/llmos/doctor/killswitch", {"on": on})
        if not answer.get("ok"):
            raise LlmosError(str(answer.get("error")))
        return bool(answer.get("kill_switch"))

    def canary(self) -> dict[str, Json]:
        return self._post("/v1/llmos/doctor/canary")

    def tune(self, **options: Json) -> dict[str, Json]:
        """Start a study in the daemon (it runs there; its events come on :meth:`events`)."""
        return self._change("tune", "/v1/llmos/tune", {"options": options})

    def tune_stop(self) -> dict[str, Json]:
        return self._post("/v1/llmos/tune/stop")

    def tune_apply_best(self, report: dict[str, Json]) -> dict[str, Json]:
        return self._change("apply", "/v1/llmos/tune/apply_best", {"report": report})

    def kill_switch(self, on: bool) -> dict[str, Json]:
        """The doctor's kill switch on or off, the answer as a dict (read-only refuses turning it off)."""
        return self._post("/v1/llmos/kill_switch", {"on": bool(on)})

    def change(self, verb: str, body: dict[str, Json], *, idempotency_key: str | None = None) -> dict[str, Json]:
        """``apply``, ``undo``, ``restart`` or ``kill_switch`` with its body; with an idempotency
        key the daemon runs it once (a retry gets the first answer with ``"replayed": true``)."""
        if verb not in ("apply", "undo", "restart", "kill_switch"):
            raise LlmosError(f"unknown change {verb!r}: apply, undo, restart or kill_switch")
        if self.readonly and not (verb == "kill_switch" and body.get("on") is True):
            raise DaemonReadOnly(f"read-only attach: {verb} is disabled (it would change the daemon)")
        payload = dict(body)
        if idempotency_key is not None:
            payload["idempotency_key"] = idempotency_key
        return self._post(f"/v1/llmos/{verb}", payload)

    # ---- the chat: one more client of the daemon's queue ----------------------------------------------
    def chat(self, messages: list[dict[str, str]], **sampling: Json) -> str:
        """One reply (the daemon's queue decides when): its text. Raises LlmosError on an error."""
        data = self._post("/v1/chat/completions", {"messages": messages, **sampling})  # type: ignore[dict-item]
        error = data.get("error")
        if isinstance(error, dict):
            raise LlmosError(str(error.get("message")))
        choices = data.get("choices")
        assert isinstance(choices, list) and isinstance(choices[0], dict)
        message = choices[0].get("message")
        return str(message.get("content")) if isinstance(message, dict) else ""

    def stream_chat(self, messages: list[dict[str, str]], **sampling: Json) -> Iterator[dict[str, Json]]:
        """The reply's server-sent chunks as they come (the last one carries ``usage``). A refusal
        (a full queue, a change draining the engine) raises LlmosError with the daemon's line;
        closing the generator early disconnects, which cancels the reply in the daemon."""
        body = {"messages": messages, **sampling, "stream": True, "stream_options": {"include_usage": True}}
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body,
                                   timeout=httpx.Timeout(10.0, read=None)) as response:
                if response.status_code != 200:
                    response.read()
                    error = self._json(response).get("error")
                    message = error.get("message") if isinstance(error, dict) else None
                    retry = response.headers.get("Retry-After")
                    raise LlmosError(f"the daemon refused the request ({response.status_code}): {message}"
                                     + (f"; retry in {retry} s" if retry else ""))
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        return
                    item = json.loads(data)
                    if isinstance(item, dict):
                        yield item
        except httpx.HTTPError as exc:
            raise self._did_not_answer(exc) from None

    def trial(self, body: dict[str, Json], *, timeout: float | None = None) -> dict[str, Json]:
        """One box's part of a fleet study (``POST /v1/llmos/trial``): ``{"params", "spec"}`` measures
        a trial, ``{"describe": True}`` describes the box, ``{"verify": {...}}`` verifies A/B.
        ``timeout``: the whole call's limit (a trial takes as long as its bench)."""
        try:
            response = self._http.post("/v1/llmos/trial", json=body,
                                       timeout=timeout if timeout is not None else self._http.timeout)
            return self._json(response)
        except httpx.HTTPError as exc:
            raise LlmosError(f"the daemon at {self.socket} did not answer: {exc}") from None
