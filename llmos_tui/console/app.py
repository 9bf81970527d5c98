"""`llmos-tui chat`: a plain line-mode chat for SSH sessions, dumb terminals and pipes.

With a terminal: prompt-toolkit input with a persistent history, multi-line editing
(Esc then Enter, or Ctrl-J, for a new line), slash commands, streaming output, Ctrl-C
cancels a reply. Without one: the prompt is read from stdin and only the answer is written
to stdout, so `echo hi | llmos-tui chat` works in scripts.
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from llmos_tui.config import Config
from llmos_tui.engine.metrics import format_metrics
from llmos_tui.engine.params import EngineParams
from llmos_tui.engine.supervisor import Reply
from llmos_tui.errors import LlmosError
from llmos_tui.operator import Operator
from llmos_tui.textsafe import sanitize

HELP = """\
/help               this list
/model              the model and what its GGUF header says
/params [k=v ...]   show the engine parameters, or change some and reload (e.g. /params n_ctx=4096)
/reset              start a new conversation (the engine forgets the old one)
/restart            restart the engine (after a crash, say)
/quit               leave (Ctrl-D too)
Enter sends; Esc then Enter (or Ctrl-J) adds a line; Ctrl-C cancels a reply."""


def run_console(config: Config, *, show_metrics: bool = True, stdin: TextIO | None = None,
                stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    op = Operator(config)
    try:
        error = op.try_start_engine()
        if error:
            print(f"llmos-tui: error: {error}", file=stderr)
            return 2
        if not stdin.isatty():
            return _run_piped(op, stdin, stdout, stderr)
        return _run_interactive(op, stdout, show_metrics)
    finally:
        op.close()


def _run_piped(op: Operator, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    prompt = stdin.read().strip()
    if not prompt:
        print("llmos-tui: error: no prompt on stdin", file=stderr)
        return 2
    reply = op.chat.send(prompt)
    for piece in reply.batches():
        stdout.write(sanitize(piece))
        stdout.flush()
    stdout.write("\n")
    stdout.flush()
    if reply.status in ("interrupted", "error"):
        print(f"llmos-tui: error: reply {reply.status}: {reply.error}", file=stderr)
        return 1
    return 0


def _stream(reply: Reply, write: Callable[[str], None], cancel: Callable[[], None]) -> None:
    try:
        for piece in reply.batches():
            write(sanitize(piece))
    except KeyboardInterrupt:
        cancel()
        for piece in reply.batches():  # drain what was already on its way
            write(sanitize(piece))


def _run_interactive(op: Operator, stdout: TextIO, show_metrics: bool) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

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

    info = op.supervisor.model_info
    demo = " (the embedded demo model: a tiny model trained on a small corpus)" if info and info.is_demo else ""
    say(f"llmos-tui chat · {info.summary() if info else '?'}{demo}\n/help lists the commands.\n")
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
            if _slash(op, text, say) == "quit":
                return 0
            continue
        if not op.supervisor.is_ready:
            say(f"engine is {op.supervisor.state.value}: /restart starts it again, /quit leaves\n")
            continue
        try:
            reply = op.chat.send(text)
        except LlmosError as exc:
            say(f"error: {exc}\n")
            continue
        _stream(reply, say, op.supervisor.cancel)
        say("\n")
        if reply.status == "cancelled":
            say("[cancelled]\n")
        elif reply.status in ("interrupted", "error"):
            say(f"[{reply.status}: {reply.error}]\n")
        if show_metrics and reply.metrics:
            say(f"\x1b[2m{format_metrics(reply.metrics)}\x1b[0m\n")


def _slash(op: Operator, text: str, say: Callable[[str], None]) -> str | None:
    command, _, rest = text.partition(" ")
    if command in ("/quit", "/exit", "/q"):
        return "quit"
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
            params = EngineParams.from_mapping(changes, op.supervisor.params)
        except ValueError:
            say("usage: /params key=value ...\n")
            return None
        except LlmosError as exc:
            say(f"error: {exc}\n")
            return None
        say("reloading…\n")
        error = op.restart_engine(params, reason="operator: /params")
        say(f"error: {error}\n" if error else f"ready · {params.summary()}\n")
    elif command == "/restart":
        say("restarting…\n")
        error = op.restart_engine(reason="operator: /restart")
        say(f"error: {error}\n" if error else "ready\n")
    elif command == "/reset":
        op.chat.reset()
        say("new conversation\n")
    else:
        say(f"unknown command {command}; /help lists them\n")
    return None
