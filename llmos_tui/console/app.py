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

import json
import sys
from typing import Any, Callable, TextIO

from llmos_tui.config import Config
from llmos_tui.core.operator import Operator
from llmos_tui.engine.metrics import format_metrics
from llmos_tui.engine.supervisor import Reply
from llmos_tui.errors import LlmosError
from llmos_tui.textsafe import sanitize

HELP = """\
/help               this list
/model              the model and what its GGUF header says
/params [k=v ...]   show the engine parameters, or change some (vetted, journaled, verified; e.g. /params n_ctx=4096)
/undo ID            revert a journaled configuration change (cfg:N or act:N)
/reset              start a new conversation (the engine forgets the old one)
/resume [N]         list earlier chats from the journal, or continue chat N
/findings           the doctor's open findings
/adapt [MODE]       the online thread learner: off, shadow (shows what it would do) or on
/restart            restart the engine (after a crash, say)
/quit               leave (Ctrl-D too)
Enter sends; Esc then Enter (or Ctrl-J) adds a line; Ctrl-C cancels a reply."""

CHANGING = ("/params", "/restart", "/undo")


def run_console(config: Config, *, show_metrics: bool = True, stdin: TextIO | None = None,
                stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    from llmos_tui.core.wiring import build_core

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    interactive = stdin.isatty()
    op = build_core(config, "live" if interactive else "oneshot")
    op.face = "console"
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


def _run_piped(op: Operator, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
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


def _notice_for(event: Any) -> str | None:
    """One line for a doctor event worth telling an operator at a console."""
    finding = getattr(event, "finding", None)
    kind = getattr(event, "kind", "")
    if kind == "finding" and finding is not None:
        return f"[doctor] {finding.severity}: {finding.title}"
    if kind in ("action", "notice") and getattr(event, "message", ""):
        return f"[doctor] {event.message}"
    return None


def _run_interactive(op: Operator, stdout: TextIO, show_metrics: bool) -> int:
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

    def doctor_notice(event: Any) -> None:
        line = _notice_for(event)
        if line:
            print(sanitize(line), flush=True)  # patch_stdout keeps it above the prompt

    unsubscribe = op.doctor.subscribe(doctor_notice) if op.doctor is not None else (lambda: None)
    info = op.supervisor.model_info
    demo = " (the embedded demo model: a tiny model trained on a small corpus)" if info and info.is_demo else ""
    ro = " · read-only" if op.config.readonly else ""
    say(f"llmos-tui chat · {info.summary() if info else '?'}{demo}{ro}\n/help lists the commands.\n")
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


def _slash(op: Operator, text: str, say: Callable[[str], Any], err: Callable[[str], Any]) -> str | None:
    """Run one slash command. ``say`` prints normal output, ``err`` one error line."""
    command, _, rest = text.partition(" ")
    if command in ("/quit", "/exit", "/q"):
        return "quit"
    if command in CHANGING and op.config.readonly:
        err(f"read-only mode: {command} is disabled (it would change the engine)")
        return None
    if command == "/help":
        say(HELP + "\n")
    elif command == "/model":
        info = op.supervisor.model_info
        if info is None:
            say("no model loaded\n")
        else:
            say(f"{info.summary()}\n  path {info.path}\n  params {info.n_params:,}  layers {info.n_layer}  "
                f"vocab {info.vocab_size}  chat template {'yes' if info.has_chat_template else 'no'}\n")
            if info.description:
                say(f"  {info.description}\n")
    elif command == "/params":
        if not rest.strip():
            say(op.supervisor.params.summary() + "\n")
            return None
        try:
            changes = dict(pair.split("=", 1) for pair in rest.split())
        except ValueError:
            err("usage: /params key=value ...")
            return None
        say("reloading…\n")
        result = op.apply(changes, reason=f"console: /params {rest.strip()}")
        if result.ok:
            say(f"{result.message}\n")
        else:
            err(result.message)
    elif command == "/undo":
        if not rest.strip():
            err("usage: /undo cfg:N | act:N")
            return None
        say("undoing…\n")
        result = op.undo(rest.strip())
        if result.ok:
            say(f"{result.message}\n")
        else:
            err(result.message)
    elif command == "/restart":
        say("restarting…\n")
        error = op.restart_engine(reason="operator: /restart")
        if error:
            err(error)
        else:
            say("ready\n")
    elif command == "/reset":
        op.chat.reset()
        say("new conversation\n")
    elif command == "/resume":
        _resume(op, rest.strip(), say, err)
    elif command == "/adapt":
        mode = rest.strip().lower()
        if not mode:
            policy = op.adapter.policy() if op.adapter is not None else {"mode": "off"}
            say(json.dumps(policy, default=str) + "\n")
            return None
        if mode == "on" and op.config.readonly:
            err("read-only mode: /adapt on is disabled (it would change the engine's threads)")
            return None
        try:
            say(op.set_adapt_mode(mode) + "\n")
        except LlmosError as exc:
            err(str(exc))
    elif command == "/findings":
        if op.doctor is None:
            err("the doctor is not running")
            return None
        open_findings = op.doctor.findings(open_only=True)
        if not open_findings:
            say("no open findings\n")
        for f in open_findings:
            say(f"#{f.id} {f.severity}: {f.title}\n")
    else:
        err(f"unknown command {command}; /help lists them")
    return None


def _resume(op: Operator, which: str, say: Callable[[str], Any], err: Callable[[str], Any]) -> None:
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
