"""`llmos-tui journal …`: read the journal's timeline, show an entry, undo a change, export, repair.

Every handler returns an exit code and reports trouble as one line on stderr, never a
traceback: 0 done, 1 the journal refused (locked, damaged, no such entry…), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from llmos_tui.cli.support import guarded

if TYPE_CHECKING:
    from llmos_tui.config import Config
    from llmos_tui.core.endpoint import Json, Running
    from llmos_tui.journal import Journal

PROG = "llmos-tui journal"


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "journal",
        help="the journal: every configuration, event, finding and action; undo changes",
        description="Read and undo the journal. IDs look like cfg:12, evt:40, act:3, fnd:7, trl:5, chat:2.",
    )
    # Also accepted after the subcommand; SUPPRESS keeps a top-level --journal from being reset.
    parser.add_argument("--journal", metavar="PATH", default=argparse.SUPPRESS, help="journal SQLite file")
    parser.set_defaults(func=_cmd_list, kind=None, since=None, limit=50, json=False, box=None)
    sub = parser.add_subparsers(dest="journal_command", metavar="ACTION")

    listing = sub.add_parser("list", help="recent entries, newest first (the default)")
    listing.add_argument("--kind", metavar="KINDS", help="comma list of types (config,event,finding,action,study,trial,"
                         "chat,message,telemetry) or kinds (crashed,loaded,undo,tuner,...)")
    listing.add_argument("--since", metavar="WHEN", help="10m, 2h, 1d, 1w or an ISO time")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="at most N entries (default 50)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--box", metavar="NAME", default=None,
                         help="a fleet box's entries, as the head copied them (`all`: every box)")
    listing.set_defaults(func=_cmd_list)

    show = sub.add_parser("show", help="one entry with its evidence and links")
    show.add_argument("entry", metavar="ID", help="e.g. act:3")
    show.set_defaults(func=_cmd_show)

    undo = sub.add_parser("undo", help="revert a configuration change (the revert is journaled too)")
    undo.add_argument("entry", metavar="ID", help="cfg:N (back to its parent) or act:N (back to before it)")
    undo.set_defaults(func=_cmd_undo)

    explain = sub.add_parser("explain", help="the local model explains a finding from the journal's evidence")
    explain.add_argument("entry", metavar="fnd:N", help="the finding, e.g. fnd:7")
    explain.add_argument("--max-tokens", type=int, default=None, metavar="N", help="reply length (default 256)")
    explain.set_defaults(func=_cmd_explain)

    export = sub.add_parser("export", help="every table as JSON")
    export.add_argument("--json", action="store_true", default=True, help="JSON (the only format; the default)")
    export.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    export.set_defaults(func=_cmd_export)

    repair = sub.add_parser("repair", help="check the journal; --move-aside renames a bad one (never deletes)")
    repair.add_argument("--move-aside", action="store_true", help="rename the journal (and its -wal/-shm) aside")
    repair.add_argument("--full", action="store_true", help="full integrity check (slower than the quick one)")
    repair.set_defaults(func=_cmd_repair)


# ---- helpers --------------------------------------------------------------------
def journal_path(args: argparse.Namespace) -> Path:
    """--journal, else the config file's [journal] path, else the default."""
    explicit = getattr(args, "journal", None)
    if explicit:
        return Path(explicit).expanduser()
    from llmos_tui.paths import default_paths

    config_arg = getattr(args, "config", None)
    if config_arg or default_paths().config_file.exists():
        from llmos_tui.config import load_config

        overrides = {"config_explicit": bool(config_arg)}
        return load_config(Path(config_arg) if config_arg else None, overrides=overrides).journal_file
    return default_paths().journal


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1




def _open_for_reading(path: Path) -> "Journal":
    """Through the core's journal-only helper: writable when possible (an old schema gets
    upgraded); read-only when that is all we may do (said on stderr)."""
    from llmos_tui.core.wiring import open_journal_for_reading

    return open_journal_for_reading(path, note=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))


# ---- handlers -------------------------------------------------------------------
@guarded
def _cmd_list(args: argparse.Namespace) -> int:
    from llmos_tui.journal import JournalMissing, parse_since

    if args.limit is not None and args.limit < 1:
        print(f"{PROG}: error: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 2
    since = parse_since(args.since) if args.since else None
    path = journal_path(args)
    try:
        journal = _open_for_reading(path)
    except JournalMissing:
        print(f"no journal at {path} yet (llmos-tui creates it on first use)")
        return 0
    if args.box:
        return _list_box(journal, args, since)
    with journal:
        entries = journal.timeline(kinds=args.kind, since=since, limit=args.limit)
    if args.json:
        print(json.dumps([{"id": e.id, "type": e.type, "kind": e.kind, "ts": e.ts, "time": e.time,
                           "summary": e.summary, "undoable": e.undoable} for e in entries], indent=2))
        return 0
    if not entries:
        print("no entries" + (" match" if args.kind or args.since else f" in {path}"))
        return 0
    width_id = max(len(e.id) for e in entries)
    width_kind = max(len(e.kind) for e in entries)
    for e in entries:
        print(f"{e.id:<{width_id}}  {e.time}  {e.type:<9} {e.kind:<{width_kind}}  {e.summary}")
    return 0


def _list_box(journal: "Journal", args: argparse.Namespace, since: float | None) -> int:
    """`journal list --box NAME`: the head's copy of a fleet box's journal (also when it is down)."""
    with journal:
        box = None if args.box == "all" else args.box
        known = [row["box"] for row in journal.fleet.boxes()]
        entries = journal.fleet.entries(box, kinds=args.kind, since=since, limit=args.limit)
    if box is not None and box not in known:
        print(f"{PROG}: error: no box {box!r} in this journal's fleet (known: {', '.join(known) or 'none'})",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"box": b, "id": e.id, "type": e.type, "kind": e.kind, "ts": e.ts, "time": e.time,
                           "summary": e.summary, "undoable": e.undoable} for b, e in entries], indent=2))
        return 0
    if not entries:
        print("no entries" + (" match" if args.kind or args.since else f" of box {args.box}"))
        return 0
    width_box = max(len(b) for b, _e in entries)
    width_id = max(len(e.id) for _b, e in entries)
    width_kind = max(len(e.kind) for _b, e in entries)
    for b, e in entries:
        print(f"{b:<{width_box}}  {e.id:<{width_id}}  {e.time}  {e.type:<9} {e.kind:<{width_kind}}  {e.summary}")
    return 0


@guarded
def _cmd_show(args: argparse.Namespace) -> int:
    from llmos_tui.journal import parse_entry_id

    parse_entry_id(args.entry)  # a bad ID is reported before the journal is opened
    with _open_for_reading(journal_path(args)) as journal:
        detail = journal.show(args.entry)
    print(json.dumps(detail, indent=2, default=str, ensure_ascii=False))
    return 0


@guarded
def _cmd_undo(args: argparse.Namespace) -> int:
    """The same undo from anywhere: an llmos-tui running on this journal carries it out (a change
    there, through its own transaction); with none running, a one-shot core vets it (read-only,
    bad-list, VRAM fit) and journals it for the next start, and says what that start runs.
    Exit 0 only when the undo was applied (or, with no engine running, journaled for the next start)."""
    from llmos_tui.cli.main import config_from_args
    from llmos_tui.core.endpoint import find_running, request
    from llmos_tui.journal import parse_entry_id

    parse_entry_id(args.entry)  # a bad ID is one line before anything else
    path = journal_path(args)
    if not path.exists():
        return _error(f"no journal at {path}")
    config = config_from_args(args)
    config.journal_path = path
    running = find_running(config.paths.runtime_dir, path)
    if running:
        return _undo_there(running[0], args.entry, path, request)
    return _undo_here(config, args.entry)


def _undo_there(running: "Running", entry: str, path: Path, request: "Callable[..., dict[str, Json]]") -> int:
    who = f"the llmos-tui running on this journal (pid {running.pid})"
    try:
        answer = request(running.endpoint, {"op": "undo", "entry": entry, "journal": str(path)})
    except (OSError, ValueError) as exc:
        return _error(f"{entry} not undone: {who} did not answer ({exc}); close it or undo there")
    result = answer.get("result")
    if not isinstance(result, dict):
        return _error(f"{entry} not undone by {who}: {answer.get('error', 'no answer')}")
    print(f"{who}: {result.get('message')}")
    if result.get("state") != "applied":
        return 1
    engine = answer.get("engine")
    if isinstance(engine, dict):
        print(f"  it runs now: {', '.join(f'{k}={v}' for k, v in engine.items() if k != 'model_path')}")
    return 0


def _undo_here(config: "Config", entry: str) -> int:
    from llmos_tui.core.journaling import resume_params
    from llmos_tui.core.wiring import build_core

    op = build_core(config, "oneshot", doctor=False, endpoint=False)
    try:
        if op.journal_writer is None:
            return _error(f"{entry} not undone: {'; '.join(op.problems) or 'the journal did not open'}")
        result = op.undo(entry)  # no engine runs here: vetted and journaled for the next start
        if not result.ok:
            return _error(f"{entry} not undone: {result.message.removeprefix('refused: ')}")
        action = f"act:{result.action_id}"
        print(f"undo recorded as {action}: cfg:{result.config_id} is now the active configuration")
        changes = op.journal_writer.submit(lambda j: j.show(action).get("changes", {})).result(30)
        for key, (before, after) in changes.items():
            print(f"  {key}: {before} -> {after}")
        nxt = op.journal_writer.submit(lambda j: resume_params(j, config.engine)).result(30)
        print(f"no engine runs in this command: the next start runs {nxt.params.summary()}")
        if result.params is not None and nxt.params.to_dict() != result.params.to_dict():
            return _error(f"cfg:{result.config_id} is journaled, but a start with the settings configured here "
                          f"runs {nxt.params.summary()} ({nxt.problem or 'they differ from those it was applied on'})")
        return 0
    finally:
        op.close()


@guarded
def _cmd_explain(args: argparse.Namespace) -> int:
    """Start the engine (the journal's active configuration), build the prompt from the journal,
    stream the model's words. Exit 1 when the engine is not healthy or the finding is unknown."""
    from llmos_tui.cli.main import config_from_args
    from llmos_tui.core import explain
    from llmos_tui.core.wiring import build_core
    from llmos_tui.engine.metrics import format_metrics
    from llmos_tui.journal import parse_entry_id
    from llmos_tui.textsafe import sanitize

    prefix, number = parse_entry_id(args.entry)
    if prefix != "fnd":
        print(f"{PROG}: error: explain takes a finding (fnd:N), got {args.entry}", file=sys.stderr)
        return 2
    if args.max_tokens is not None and args.max_tokens < 16:
        print(f"{PROG}: error: --max-tokens must be at least 16, got {args.max_tokens}", file=sys.stderr)
        return 2
    config = config_from_args(args)
    config.journal_path = journal_path(args)
    with _open_for_reading(config.journal_path) as journal:
        journal.get_finding(number)  # an unknown finding is one line before any engine starts
    operator = build_core(config, "oneshot", telemetry=False, doctor=False, endpoint=False)
    try:
        error = operator.try_start_engine()
        why = f"the engine did not start: {error}" if error else explain.refusal(operator)
        if why:
            return _error(f"fnd:{number} not explained: {why}")
        with _open_for_reading(config.journal_path) as journal:
            prompt = explain.build_prompt(journal, number, n_ctx=explain.engine_n_ctx(operator),
                                          reply_tokens=args.max_tokens or explain.REPLY_TOKENS)
        print(f"fnd:{number} [{prompt.severity}] {sanitize(prompt.title)}")
        print(f"evidence from the journal (what the model is given; {prompt.note()}):")
        for item in prompt.kept:
            print(f"  {sanitize(item.text)}")
        model = operator.supervisor.model_info.name if operator.supervisor.model_info else "the model"
        print(f"--- the model's words ({model}); an explanation, not a measurement ---", flush=True)
        reply = explain.ask(operator, prompt, on_piece=lambda text: print(sanitize(text), end="", flush=True))
        reply.wait()
        print()
        outcome = reply.status if reply.status != "done" else "end"
        print(f"--- {outcome}: {format_metrics(reply.metrics)} ---")
        if reply.status not in ("done", "cancelled"):
            return _error(f"the reply did not finish: {reply.error or reply.status}")
        return 0
    finally:
        operator.close()


@guarded
def _cmd_export(args: argparse.Namespace) -> int:
    with _open_for_reading(journal_path(args)) as journal:
        data = journal.export()
    if not args.out:
        json.dump(data, sys.stdout, indent=1, default=str, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    out = Path(args.out).expanduser()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:  # written whole, then renamed: never a half file
        json.dump(data, fh, indent=1, default=str, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, out)
    rows = sum(len(rows) for rows in data["tables"].values())
    print(f"exported {rows} rows from {len(data['tables'])} tables to {out}")
    return 0


@guarded
def _cmd_repair(args: argparse.Namespace) -> int:
    from llmos_tui.journal import Journal, move_aside

    path = journal_path(args)
    if args.move_aside:
        moved = move_aside(path)
        print(f"moved {path} aside to {moved[0]}" + (f" (with {len(moved) - 1} companion files)" if len(moved) > 1 else ""))
        print("nothing was deleted; the next start creates a fresh journal at the old path")
        return 0
    # The open runs SQLite's quick check before anything is written, and names the way out.
    with Journal(path, create=False) as journal:
        problems = journal.check(full=args.full)
        if problems:
            return _error(f"journal {path} is damaged: {problems[0]}; "
                          f"`{PROG} repair --move-aside` renames it aside (nothing is deleted)")
        counts = journal.counts()
        version = journal.schema_version
    print(f"journal {path} is healthy (schema v{version}, {sum(counts.values())} rows)")
    return 0
