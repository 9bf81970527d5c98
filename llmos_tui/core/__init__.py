"""The headless core and its public scripting API.

Everything a script, a plugin author or a face needs::

    from llmos_tui.core import build_core, load_config

    with build_core(load_config(), mode="oneshot") as op:
        op.start_engine()
        print(op.send("What is VRAM?").wait(60).text)

``build_core`` (the one composition root) returns an :class:`Operator` whose verbs are
``start_engine, send, cancel, apply, undo, restart_engine, reset_start_limit, set_adapt_mode,
snapshot, subscribe, tune, close``.
Configuration changes (``apply``, ``undo``) return a :class:`ChangeResult`. Nothing here
imports Textual or prompt-toolkit.
"""

from llmos_tui.config import Config, load_config
from llmos_tui.core.changes import ChangeResult
from llmos_tui.core.operator import Operator
from llmos_tui.core.wiring import MODES, build_core
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import EngineEvent, EngineState, Reply
from llmos_tui.errors import LlmosError

__all__ = [
    "MODES",
    "ChangeResult",
    "Config",
    "EngineEvent",
    "EngineParams",
    "EngineState",
    "LlmosError",
    "Operator",
    "Reply",
    "build_core",
    "load_config",
]
