"""Messages that carry core events into the UI thread (post_message is thread-safe)."""

from __future__ import annotations

from textual.message import Message

from llmos_tui.engine.supervisor import EngineEvent


class EngineChanged(Message):
    """The supervisor said something: state, progress, crash, request done."""

    def __init__(self, event: EngineEvent) -> None:
        super().__init__()
        self.event = event


class EngineStartFinished(Message):
    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


class DoctorToast(Message):
    """The doctor found or did something (any doctor.DoctorEvent)."""

    def __init__(self, event: object) -> None:
        super().__init__()
        self.event = event
