"""Messages that carry core events into the UI thread (post_message is thread-safe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

from llmos_tui.engine.supervisor import EngineEvent

if TYPE_CHECKING:
    from llmos_tui.doctor.loop import DoctorEvent


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

    def __init__(self, event: "DoctorEvent") -> None:
        super().__init__()
        self.event = event
