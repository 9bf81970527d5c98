"""The narrow faces the tuner and the learner need of parts above or beside them.

The change transaction lives in ``core`` (a layer above tuning), so tuning names only what it
calls: ``holding`` a span, ``pause`` / ``resume`` the engine, ``propose`` a configuration, and the
bad-list. ``core.changes.Changes`` satisfies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ContextManager, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.engine.params import EngineParams

JsonDict = dict[str, object]


class ChangeOutcome(Protocol):
    state: str
    message: str

    @property
    def ok(self) -> bool: ...

    def to_dict(self) -> JsonDict: ...


class ChangesPort(Protocol):
    def holding(self, who: str, *, wait_s: float = 0.0) -> ContextManager[None]: ...

    def pause(self, *, source: str = ..., reason: str = ..., wait_s: float = ...) -> ChangeOutcome: ...

    def resume(self, *, source: str = ..., reason: str = ..., wait_s: float = ...) -> ChangeOutcome: ...

    def propose(self, params: "EngineParams", *, source: str = ..., reason: str = ..., kind: str = ...,
                proposed_by: str = ...) -> ChangeOutcome: ...

    def bad_reason(self, params: "EngineParams") -> str | None: ...


__all__ = ["ChangeOutcome", "ChangesPort", "JsonDict"]
