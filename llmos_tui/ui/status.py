"""The engine status bar: model, parameters and state, on every screen."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import Static

from typing import TYPE_CHECKING, Callable

from llmos_tui.engine.gguf_info import human_bytes

if TYPE_CHECKING:
    from llmos_tui.core.operator import Operator
    from llmos_tui.engine.supervisor import EngineEvent

STATE_STYLE = {
    "ready": "bold green",
    "generating": "bold cyan",
    "loading": "bold yellow",
    "restarting": "bold yellow",
    "crashed": "bold white on red",
    "failed": "bold white on red",
    "stopped": "dim",
    "paused": "bold magenta",  # a tuning study holds the machine; chat resumes after it
}


STATE_HINT = {
    "stopped": "the engine is not running yet",
    "restarting": "restarting the engine",
}


class EngineStatus(Static):
    """Two compact lines; rebuilt when the engine says something changed (each bar listens to the
    engine itself, so a bar on a screen that was hidden is never stale when it shows again)."""

    class Changed(Message):
        """The engine published an event (posted from the engine's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self._unsubscribe: Callable[[], None] | None = None
        self._tenth = -1  # the load progress shown, in tenths: a redraw per tenth, not per event

    @property
    def operator(self) -> "Operator | None":
        """The cockpit's core; None for a screen shown outside LlmosApp (tests, embedding)."""
        from llmos_tui.ui.app import LlmosApp

        return self.app.operator if isinstance(self.app, LlmosApp) else None

    def on_mount(self) -> None:
        operator = self.operator
        if operator is not None:
            self._unsubscribe = operator.supervisor.subscribe(self._on_engine_event)
        self.refresh_status()

    def _on_engine_event(self, event: "EngineEvent") -> None:
        if event.kind != "progress" or int(event.data.get("progress", 0) * 10) != self._tenth:
            self._tenth = int(event.data.get("progress", 0) * 10) if event.kind == "progress" else -1
            self.post_message(self.Changed())

    def on_engine_status_changed(self, message: "EngineStatus.Changed") -> None:
        message.stop()
        self.refresh_status()

    def on_show(self) -> None:
        self.refresh_status()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def refresh_status(self) -> None:
        operator = self.operator
        if operator is None:  # a screen shown outside LlmosApp (tests, embedding)
            self.display = False
            return
        sup = operator.supervisor
        stats = sup.stats()
        state = stats["state"]
        info = sup.model_info
        line1 = Text()
        replay = operator.replay
        if replay:  # telemetry from a trace: say so before anything else
            line1.append(" REPLAY" + (" (synthetic trace)" if replay.get("synthetic") else " (recorded trace)") + " ",
                         style="bold black on yellow")
            line1.append(" ")
        if operator.config.readonly:
            line1.append(" READ-ONLY ", style="bold black on cyan")
            line1.append(" ")
        if operator.attached:  # a face of a running daemon (llmos_tui.serve.attached)
            line1.append(f" DAEMON pid {operator.daemon.get('pid')} ", style="bold black on green")  # type: ignore[attr-defined]
            line1.append(" ")
        label = state.upper()
        if state == "loading":
            label += f" {stats['load_progress'] * 100:.0f}%"
        line1.append(f" {label} ", style=STATE_STYLE.get(state, "bold"))
        if info is not None:
            line1.append(f" {info.name}", style="bold")
            if info.is_demo:
                line1.append(" (demo model)", style="italic yellow")
            line1.append(f" · {human_bytes(info.size_bytes)} · {info.quantization} · {info.architecture}"
                         f" · train ctx {info.context_length or '?'}")
        if (state in ("crashed", "failed") or (operator.attached and state == "stopped")) and stats.get("last_error"):
            line1.append(f" · {stats['last_error']}", style="red")
        elif state in STATE_HINT:
            line1.append(f" · {STATE_HINT[state]}", style="italic")
        line2 = Text(" ", style="dim")
        if stats["n_ctx"]:
            line2.append(f"ctx used {stats['ctx_used']}/{stats['n_ctx']} · ", style="dim")
        if stats["last_gen_tps"]:
            line2.append(f"{stats['last_gen_tps']:.1f} tok/s · ", style="dim")
        line2.append(sup.params.summary(), style="dim")
        self.update(Text("\n").join([line1, line2]))
