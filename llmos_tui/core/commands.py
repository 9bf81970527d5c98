"""The one command table: every command an operator can type, as plain data over the core.

The TUI's ``:`` line, the console's ``/`` commands and the help screen render this table;
each face adds only what it alone can do (switch a screen, pick a theme, leave) in a small
table of its own. A command is a name, its argument, whether it changes the engine, where
completions come from, and a handler that takes the :class:`~llmos_tui.core.operator.Operator`
and returns one line (:class:`Outcome`). Handlers block (a reload takes seconds): a face runs
them off its UI thread.

Whatever changes the engine goes through the Operator's verbs (``apply``, ``undo``,
``restart_engine``, ``reset_start_limit``, ``set_adapt_mode``) or the doctor's decisions,
which run through the change transaction; never the supervisor. ``--readonly`` refuses every
engine-changing command here, once, for every face (:func:`refusal`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, Union

from llmos_tui.errors import LlmosError

if TYPE_CHECKING:
    from llmos_tui.core.changes import ChangeResult
    from llmos_tui.core.operator import Operator
    from llmos_tui.doctor import Doctor

__all__ = ["Command", "Outcome", "COMMANDS", "JOURNAL_KINDS", "find", "split", "refusal", "execute",
           "change_outcome", "undoable_ids"]

JOURNAL_KINDS = ("config", "event", "finding", "action", "study", "trial", "chat", "kind:crashed",
                 "kind:loaded", "kind:undo", "kind:tuner", "kind:repair", "kind:load_failed")


@dataclass(frozen=True)
class Outcome:
    """What a command came to: one line for the operator, and whether it did what was asked
    (a face's exit code or notice severity follows ``ok``)."""

    text: str
    ok: bool = True


Handler = Callable[["Operator", str], Outcome]
Completion = Callable[["Operator"], list[str]]
ChangesEngine = Union[bool, Callable[[str], bool]]


@dataclass(frozen=True)
class Command:
    """One command of the table.

    ``changes_engine``: True, False, or a function of the argument (``:killswitch off``
    changes what the doctor may do to the engine, ``on`` does not). Such a command asks
    first in the TUI and is refused in read-only mode everywhere.
    ``complete``: the completion source, ``(operator) -> candidates``; ``slow`` when it reads
    the journal (a face computes it off its UI thread).
    ``handler``: None for a face's own command (the face's table supplies what it does).
    """

    name: str
    help: str
    handler: Handler | None = None
    args: str = ""  # what the argument is, for suggestions and help ("ID", "[k=v ...]", "on|off")
    needs_arg: bool = False
    changes_engine: ChangesEngine = False
    complete: Completion | None = None
    slow: bool = False
    aliases: tuple[str, ...] = ()
    confirm: str = ""  # the question a face asks before an engine-changing run ({arg} is the argument)

    def changes_engine_for(self, arg: str) -> bool:
        rule = self.changes_engine
        return rule(arg) if callable(rule) else bool(rule)

    def question(self, arg: str) -> str:
        return (self.confirm or "Run :{name} {arg}?").format(name=self.name, arg=arg).replace(" ?", "?")

    def usage(self) -> str:
        return self.name + (f" {self.args}" if self.args else "")


# ---- helpers the handlers share ---------------------------------------------------------------
def change_outcome(op: "Operator", result: "ChangeResult") -> Outcome:
    """A ChangeResult as one line: the words say its state, ``ok`` is true only when the change
    did what was asked (applied or already so) and, with a journal open, was journaled."""
    text = result.message or result.state
    first = text.split(":", 1)[0].split(" ", 1)[0].lower()
    state_word = result.state.replace("_", " ")
    if not text.lower().startswith((state_word, first)) or first not in (
            "applied", "unchanged", "already", "refused", "rolled", "failed", "undone", "restart", "start", "stop",
            "pause", "resume"):
        text = f"{state_word}: {text}"
    ok = result.ok
    if ok and op.journal_writer is not None and not result.journaled:
        ok = False
        text += " (but a journal write failed: the journal does not record it)"
    return Outcome(text, ok)


def _doctor(op: "Operator") -> "Doctor":
    if op.doctor is None:
        raise LlmosError("the doctor is not running")
    return op.doctor


def _finding_number(verb: str, arg: str) -> int:
    try:
        return int(arg.strip().removeprefix("#"))
    except ValueError:
        raise LlmosError(f"{verb} takes a finding number, got {arg!r}") from None


def open_finding_ids(op: "Operator") -> list[str]:
    if op.doctor is None:
        return []
    return [str(f.id) for f in sorted(op.doctor.findings(open_only=True), key=lambda f: -f.id)]


def undoable_ids(op: "Operator") -> list[str]:
    """The journal's undoable entries, newest first (reads the journal: slow)."""
    writer = op.journal_writer
    if writer is None:
        return []
    return list(writer.submit(lambda j: [e.id for e in j.timeline(kinds="config,action", limit=40)
                                         if e.undoable]).result(5))


# ---- the handlers -------------------------------------------------------------------------------
def _params(op: "Operator", arg: str) -> Outcome:
    if not arg.strip():
        return Outcome(op.supervisor.params.summary())
    try:
        wanted = dict(pair.split("=", 1) for pair in arg.split())
    except ValueError:
        return Outcome("usage: params key=value ...", False)
    return change_outcome(op, op.apply(wanted, reason=f"{op.face}: params {arg.strip()}"))


def _undo(op: "Operator", arg: str) -> Outcome:
    from llmos_tui.journal import parse_entry_id

    try:
        parse_entry_id(arg.strip())
    except (LlmosError, ValueError) as exc:
        return Outcome(str(exc), False)
    return change_outcome(op, op.undo(arg.strip()))


def _restart(op: "Operator", _arg: str) -> Outcome:
    error = op.restart_engine(reason=f"{op.face}: restart")
    return Outcome(error, False) if error else Outcome("restarted: the engine is ready")


def _reset_limit(op: "Operator", _arg: str) -> Outcome:
    return Outcome(op.reset_start_limit())


def _model(op: "Operator", _arg: str) -> Outcome:
    info = op.supervisor.model_info
    if info is None:
        return Outcome("no model loaded")
    text = (f"{info.summary()}\n  path {info.path}\n  params {info.n_params:,}  layers {info.n_layer}  "
            f"vocab {info.vocab_size}  chat template {'yes' if info.has_chat_template else 'no'}")
    if info.description:
        text += f"\n  {info.description}"
    return Outcome(text)


def _findings(op: "Operator", _arg: str) -> Outcome:
    found = _doctor(op).findings(open_only=True)
    if not found:
        return Outcome("no open findings")
    return Outcome("\n".join(f"#{f.id} {f.severity}: {f.title}" for f in found))


def _adapt(op: "Operator", arg: str) -> Outcome:
    mode = arg.strip().lower()
    if not mode:
        policy = op.adapter.policy() if op.adapter is not None else {"mode": "off"}
        return Outcome(json.dumps(policy, default=str))
    if mode != "off" and op.mode == "replay":
        return Outcome("replay mode: the online learner stays off (replayed findings are not this engine's)",
                       False)
    return Outcome(op.set_adapt_mode(mode))


def _decide(verb: str, done: str, decide: Callable[["Doctor", int], str | None]) -> Handler:
    def go(op: "Operator", arg: str) -> Outcome:
        fid = _finding_number(verb, arg)
        error = decide(_doctor(op), fid)
        return Outcome(f"{verb} #{fid}: {error}", False) if error else Outcome(f"{done} #{fid}")

    return go


def _canary(op: "Operator", _arg: str) -> Outcome:
    doctor = _doctor(op)
    if op.mode == "replay":
        return Outcome("replay mode: the doctor does not probe the live engine", False)
    result = doctor.run_canary()
    if result.ok:
        return Outcome(f"canary ok: {result.gen_tokens} tokens in {result.wall_ms:.0f} ms")
    return Outcome(f"canary failed: {result.reason}", False)


def _kill_switch(op: "Operator", arg: str) -> Outcome:
    doctor = _doctor(op)
    wanted = arg.strip().lower()
    if wanted not in ("on", "off"):
        return Outcome("killswitch takes on or off", False)
    doctor.kill_switch = wanted == "on"
    return Outcome("kill switch ON: no automatic action" if doctor.kill_switch else
                   "kill switch off: automatic actions allowed")


COMMANDS: tuple[Command, ...] = (
    Command("params", "show the engine parameters, or change some (vetted, journaled, verified)", _params,
            args="[k=v ...]", changes_engine=lambda arg: bool(arg.strip()),
            confirm="Change the engine's parameters ({arg})? The engine reloads (journaled, verified, "
                    "rolled back if it fails)."),
    Command("undo", "revert a journaled change (cfg:N or act:N) through the change transaction", _undo,
            args="ID", needs_arg=True, changes_engine=True, complete=undoable_ids, slow=True,
            confirm="Undo {arg}? The previous configuration is applied to the engine (the engine reloads) "
                    "and the undo is journaled."),
    Command("restart", "restart the engine with its current settings", _restart, changes_engine=True,
            confirm="Restart the engine? A reply in progress is lost."),
    Command("reset-limit", "reset the doctor's start limit: automatic restarts are allowed again", _reset_limit,
            aliases=("resetlimit", "startlimit")),
    Command("model", "the model and what its GGUF header says", _model),
    Command("findings", "the doctor's open findings", _findings),
    Command("accept", "apply the repair the doctor proposes for finding N",
            _decide("accept", "accepted", lambda d, n: d.accept(n)),
            args="N", needs_arg=True, changes_engine=True, complete=open_finding_ids,
            confirm="Apply the proposed repair of finding #{arg}? It changes the engine (journaled, verified, "
                    "rolled back if it fails)."),
    Command("reject", "reject the repair proposed for finding N",
            _decide("reject", "rejected", lambda d, n: d.reject(n)), args="N",
            needs_arg=True, complete=open_finding_ids),
    Command("silence", "silence finding N for the doctor's silence period",
            _decide("silence", "silenced", lambda d, n: d.silence(n)),
            args="N", needs_arg=True, complete=open_finding_ids),
    Command("canary", "run the canary prompt now", _canary),
    Command("killswitch", "stop (on) or allow (off) automatic repairs", _kill_switch, args="on|off",
            needs_arg=True, complete=lambda op: ["on", "off"],
            changes_engine=lambda arg: arg.strip().lower() == "off",
            confirm="Turn the kill switch off? The doctor may then change the engine on its own."),
    Command("adapt", "online thread learner: off, shadow (shows what it would do) or on", _adapt,
            args="[off|shadow|on]", complete=lambda op: ["off", "shadow", "on"],
            changes_engine=lambda arg: arg.strip().lower() == "on",
            confirm="Let the learner pick the engine's threads per request?"),
)


# ---- running a line -----------------------------------------------------------------------------
def split(line: str, prefix: str = ":/") -> tuple[str, str]:
    """``":undo cfg:3"`` -> ``("undo", "cfg:3")``."""
    text = line.strip().lstrip(prefix).strip()
    head, _space, arg = text.partition(" ")
    return head.lower(), arg.strip()


def find(table: Iterable[Command], name: str) -> Command | None:
    name = name.strip().lower()
    for command in table:
        if name == command.name or name in command.aliases:
            return command
    return None


def merged(face: Sequence[Command], core: Sequence[Command] = COMMANDS) -> list[Command]:
    """A face's table over the core's: the face's commands first; a face command of the same
    name replaces the core's (the face does it its own way, e.g. the TUI's chat)."""
    names = {c.name for c in face}
    return list(face) + [c for c in core if c.name not in names]


def refusal(op: "Operator", command: Command, arg: str, sigil: str = "") -> str | None:
    """Why ``command arg`` cannot run here (a missing argument, read-only mode), or None.
    ``sigil``: how the face writes a command (``:`` in the TUI, ``/`` in the console)."""
    if command.needs_arg and not arg:
        return f"{sigil}{command.name} needs {command.args}: {command.help}"
    if command.changes_engine_for(arg) and op.config.readonly:
        return f"read-only mode: {sigil}{command.name} is disabled (it would change the engine)"
    return None


def execute(op: "Operator", command: Command, arg: str, sigil: str = "") -> Outcome:
    """Run a core command (blocking): refused, failed or done, always one Outcome, never a raise."""
    why = refusal(op, command, arg, sigil)
    if why:
        return Outcome(why, False)
    if command.handler is None:
        return Outcome(f"{command.name} is not available here", False)
    try:
        return command.handler(op, arg)
    except LlmosError as exc:
        return Outcome(str(exc), False)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback in a face
        return Outcome(f"{command.name} failed: {exc}", False)
