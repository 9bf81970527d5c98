"""The client of a running daemon's control socket (HTTP over the owner-only Unix socket).

    from llmos_tui.serve.client import DaemonClient, find_daemons

    with DaemonClient(find_daemons(runtime_dir)[0]) as daemon:
        print(daemon.snapshot()["engine"]["state"])
        print(daemon.apply({"n_ctx": 1024}, reason="smaller context")["message"])
        print(daemon.chat([{"role": "user", "content": "What is VRAM?"}]))

What a face needs to attach: every Operator verb the socket serves, the live events, and the
chat as one more client of the daemon's queue.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import httpx

from llmos_tui.engine.supervisor import Json
from llmos_tui.errors import LlmosError
from llmos_tui.serve.control import PREFIX, SUFFIX


def find_daemons(runtime_dir: Path) -> list[Path]:
    """The control sockets of this user's running daemons (stale ones skipped)."""
    folder = Path(runtime_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"{PREFIX}*{SUFFIX}")):
        try:
            pid = int(path.name[len(PREFIX):-len(SUFFIX)])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            continue
        except PermissionError:
            pass
        found.append(path)
    return found


class DaemonClient:
    def __init__(self, socket: Path | str, *, timeout: float = 180.0) -> None:
        self.socket = Path(socket)
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://llmos-tui",
                                  timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "DaemonClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> dict[str, Json]:
        try:
            data = response.json()
        except ValueError:
            raise LlmosError(f"the daemon answered {response.status_code} without JSON") from None
        if not isinstance(data, dict):
            raise LlmosError("the daemon answered something other than a JSON object")
        return data

    def _post(self, path: str, body: dict[str, Json] | None = None) -> dict[str, Json]:
        try:
            return self._json(self._http.post(path, json=body or {}))
        except httpx.HTTPError as exc:
            raise LlmosError(f"the daemon at {self.socket} did not answer: {exc}") from None

    def snapshot(self) -> dict[str, Json]:
        try:
            return self._json(self._http.get("/v1/llmos/snapshot"))
        except httpx.HTTPError as exc:
            raise LlmosError(f"the daemon at {self.socket} did not answer: {exc}") from None

    def apply(self, changes: dict[str, Json], *, reason: str = "") -> dict[str, Json]:
        """A ChangeResult as a dict (``ok``, ``state``, ``message``)."""
        return self._post("/v1/llmos/apply", {"changes": changes, "reason": reason})

    def undo(self, entry: str) -> dict[str, Json]:
        return self._post("/v1/llmos/undo", {"entry": entry})

    def restart(self, reason: str = "") -> dict[str, Json]:
        return self._post("/v1/llmos/restart", {"reason": reason})

    def reset_start_limit(self) -> str:
        return str(self._post("/v1/llmos/reset_start_limit").get("message"))

    def set_adapt_mode(self, mode: str) -> dict[str, Json]:
        return self._post("/v1/llmos/adapt", {"mode": mode})

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

    def events(self) -> Iterator[dict[str, Json]]:
        """The daemon's engine, doctor and change events as they happen (blocks; break to stop)."""
        with self._http.stream("GET", "/v1/llmos/events", timeout=None) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    item = json.loads(line[len("data: "):])
                    if isinstance(item, dict):
                        yield item

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
