"""`llmos-tui chat`: a plain line-mode chat for SSH sessions, dumb terminals and pipes.

It drives the same core as the TUI (``build_core``): chats are journaled and resumable,
configuration changes go through the change transaction, ``--readonly`` is honoured, and
doctor findings arrive as one-line notices.

With a terminal: prompt-toolkit input with a persistent history, multi-line editing
(Esc then Enter, or Ctrl-J, for a new line), slash commands, streaming output, Ctrl-C
cancels a reply. Without one: stdin is read as prompts (a line that starts with ``/`` is a
command) and only the answers are written to stdout, so `echo hi | llmos-tui chat` works in
scripts; errors go to stderr, one line each, and the exit code says whether all went well.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, TextIO

from llmos_tui.config import Config
from llmos_tui.core import commands as core
from llmos_tui.core.commands import Command
from llmos_tui.core.cockpit import Cockpit
from llmos_tui.engine.metrics import format_metrics
from llmos_tui.engine.supervisor import Reply
from llmos_tui.errors import LlmosError
from llmos_tui.serve.sockets import attach_face
from llmos_tui.textsafe import sanitize

if TYPE_CHECKING:
    from llmos_tui.doctor.loop import DoctorEvent

# The console's own commands; everything else is the core's one table (llmos_tui.core.commands).
FACE: tuple[Command, ...] = (
    Command("help", "this list"),
    Command("reset", "start a new conversation (the engine forgets the old one)"),
    Command("resume", "list earlier chats from the journal, or continue chat N", args="[N]"),
    Command("quit", "leave (Ctrl-D too)", aliases=("exit", "q")),
)
TABLE: list[Command] = core.merged(FACE)
EDITING = "Enter sends; Esc then Enter (or Ctrl-J) adds a line; Ctrl-C cancels a reply."


def help_text() -> str:
    """The /help list, from the command table."""
    lines = [f"/{c.usage():<20} {c.help}" for c in TABLE]
    return "\n".join(lines + [EDITING])


def run_console(config: Config, *, show_metrics: bool = True, stdin: TextIO | None = None,
                stdout: TextIO | None = None, stderr: TextIO | None = None, attach: str | None = None,
                no_attach: bool = False) -> int:
    """The console over a daemon serving this journal (or the socket ``attach``), else over an
    embedded core (``no_attach`` forces that). Leaving it leaves a daemon serving."""
    from llmos_tui.core.wiring import build_core

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    interactive = stdin.isatty()
    attached = None if no_attach else attach_face(config, attach, face="console")
    op = attached if attached is not None else \
        build_core(config, "live" if interactive else "oneshot", face="console")
    try:
        for problem in op.problems:
            print(f"llmos-tui: {problem}", file=stderr)
        error = op.try_start_engine()
        if error:
            print(f"llmos-tui: error: {error}", file=stderr)
            return 2
        if not interactive:
            return _run_piped(op, stdin, stdout, stderr)
        return _run_interactive(op, stdout, show_metrics)
    finally:
        op.close()


def _run_piped(op: Cockpit, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """Each run of lines not starting with ``/`` is one prompt; a ``/`` line is a command."""
    status = 0
    said_anything = False
    pending: list[str] = []

    def err(text: str) -> None:
        nonlocal status
        status = 1
        print(f"llmos-tui: error: {text}", file=stderr)

    def flush_prompt() -> None:
        nonlocal said_anything
        prompt = "\n".join(pending).strip()
        pending.clear()
        if not prompt:
            return
        said_anything = True
        try:
            reply = op.send(prompt)
        except LlmosError as exc:
            err(str(exc))
            return
        for piece in reply.batches():
            stdout.write(sanitize(piece))
            stdout.flush()
        stdout.write("\n")
        stdout.flush()
        if reply.status in ("interrupted", "error"):
            err(f"reply {reply.status}: {reply.error}")

    for line in stdin.read().splitlines():
        if line.startswith("/"):
            flush_prompt()
            said_anything = True
            outcome = _slash(op, line.strip(), lambda text: stdout.write(text), err)
            if outcome == "quit":
                return status
        else:
            pending.append(line)
    flush_prompt()
    if not said_anything:
        print("llmos-tui: error: no prompt on stdin", file=stderr)
        return 2
    return status


def _stream(reply: Reply, write: Callable[[str], None], cancel: Callable[[], None]) -> None:
    try:
        for piece in reply.batches():
            write(sanitize(piece))
    except KeyboardInterrupt:
        cancel()
        for piece in reply.batches():  # drain what was already on its way
            write(sanitize(piece))


def _notice_for(event: "DoctorEvent") -> str | None:
    """One line for a doctor event worth telling an operator at a console."""
    finding = event.finding
    kind = event.kind
    if kind == "finding" and finding is not None:
        return f"[doctor] {finding.severity}: {finding.title}\n         {finding.narrated}"
    if kind in ("action", "notice") and event.message:
        return f"[doctor] {event.message}"
    return None


def _run_interactive(op: Cockpit, stdout: TextIO, show_metrics: bool) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.patch_stdout import patch_stdout

    history_file = op.config.paths.chat_history
    history_file.parent.mkdir(parents=True, exist_ok=True)
    bindings = KeyBindings()

    @bindings.add("enter")
    def _submit(event) -> None:  # type: ignore[no-untyped-def]
        event.current_buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    @bindings.add("c-j")
    def _newline(event) -> None:  # type: ignore[no-untyped-def]
        event.current_buffer.insert_text("\n")

    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(history_file)), multiline=True, key_bindings=bindings,
        prompt_continuation="… ",
    )

    def say(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    def doctor_notice(event: "DoctorEvent") -> None:
        line = _notice_for(event)
        if line:
            print(sanitize(line), flush=True)  # patch_stdout keeps it above the prompt

    unsubscribe = op.doctor.subscribe(doctor_notice) if op.doctor is not None else (lambda: None)
    info = op.supervisor.model_info
    demo = " (the embedded demo model: a tiny model trained on a small corpus)" if info and info.is_demo else ""
    ro = " · read-only" if op.config.readonly else ""
    attached = op.attached
    where = f"\n{attached}: /quit leaves it serving" if attached else ""
    say(f"llmos-tui chat · {info.summary() if info else '?'}{demo}{ro}{where}\n/help lists the commands.\n")
    try:
        with patch_stdout(raw=True):
            while True:
                try:
                    text = session.prompt(FormattedText([("bold", "> ")]))
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return 0
                text = text.strip()
                if not text:
                    continue
                if text.startswith("/"):
                    if _slash(op, text, say, lambda line: say(f"error: {line}\n")) == "quit":
                        return 0
                    continue
                if not op.supervisor.is_ready:
                    say(f"engine is {op.supervisor.state.value}: /restart starts it again, /quit leaves\n")
                    continue
                try:
                    reply = op.send(text)
                except LlmosError as exc:
                    say(f"error: {exc}\n")
                    continue
                _stream(reply, say, op.cancel)
                say("\n")
                if reply.status == "cancelled":
                    say("[cancelled]\n")
                elif reply.status in ("interrupted", "error"):
                    say(f"[{reply.status}: {reply.error}]\n")
                if show_metrics and reply.metrics:
                    say(f"\x1b[2m{format_metrics(reply.metrics)}\x1b[0m\n")
    finally:
        unsubscribe()


def _slash(op: Cockpit, text: str, say: Callable[[str], object], err: Callable[[str], object]) -> str | None:
    """Run one slash command. ``say`` prints normal output, ``err`` one error line (and makes the
    piped exit code non-zero): a change that was refused, rolled back or not journaled is an error."""
    name, arg = core.split(text, "/")
    command = core.find(TABLE, name)
    if command is None:
        err(f"unknown command /{name}; /help lists them")
        return None
    if command.name == "quit":
        return "quit"
    why = core.refusal(op, command, arg, "/")
    if why:
        err(why)
        return None
    if command.name == "help":
        say(help_text() + "\n")
    elif command.name == "reset":
        op.chat.reset()
        say("new conversation\n")
    elif command.name == "resume":
        _resume(op, arg, say, err)
    else:
        if command.changes_engine_for(arg):
            say(f"{command.name}: working (the engine may reload)…\n")
        outcome = core.execute(op, command, arg, "/")
        if outcome.ok:
            say(outcome.text + "\n")
        else:
            err(outcome.text)
    return None


def _resume(op: Cockpit, which: str, say: Callable[[str], object], err: Callable[[str], object]) -> None:
    from llmos_tui.core.journaling import chat_summaries, resume_messages

    if op.journal_writer is None:
        err("the journal is not open; there is nothing to resume")
        return
    try:
        op.journal_writer.flush(5)
        if not which:
            chats = op.journal_writer.submit(lambda j: chat_summaries(j, 20)).result(10)
            if not chats:
                say("no earlier chats in the journal\n")
            for chat in chats:
                say(f"chat:{chat['id']}  {sanitize(chat['title'])}  ({chat['model']})\n")
            say("/resume N continues one\n")
            return
        chat_id = int(which.split(":")[-1])
        messages = op.journal_writer.submit(lambda j: resume_messages(j, chat_id)).result(10)
    except ValueError:
        err(f"/resume takes a chat number, got {which!r}")
        return
    except LlmosError as exc:
        err(str(exc))
        return
    op.chat.reset()
    op.chat.load(messages, chat_id)
    for m in messages[-4:]:
        say(f"{m.role}: {sanitize(m.content)}\n")
    say(f"resumed chat:{chat_id} ({len(messages)} messages)\n")
