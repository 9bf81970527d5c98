"""Engine parameters from a journaled configuration version.

The journal is a leaf: it stores a version's parameters as plain values and knows nothing of
``EngineParams``. This is the one place that turns a version back into the engine's type."""

from __future__ import annotations

from typing import Mapping, Protocol

from llmos_tui.engine.params import EngineParams


class JournaledVersion(Protocol):
    """What a journaled configuration version offers (``llmos_tui.journal.ConfigVersion``)."""

    @property
    def model_path(self) -> str: ...

    @property
    def params(self) -> Mapping[str, object]: ...


def params_of(version: JournaledVersion) -> EngineParams:
    """The EngineParams this version ran with (keys a newer release wrote are ignored)."""
    known = set(EngineParams.field_names())
    values: dict[str, object] = {k: v for k, v in version.params.items() if k in known}
    values["model_path"] = version.model_path
    return EngineParams.from_mapping(values)
