"""`llmos-tui fleet …`: many GPU boxes from one terminal, on Ray (the ``fleet`` extra).

    fleet up --address HOST:PORT [--box NAME]   join this box to the cluster and start its agent
    fleet status [--json] [--watch N]           every box: state and since when, GPUs, engine, ...
    fleet apply BOX key=value ...               a change through BOX's own change transaction
    fleet undo BOX cfg:N                        an undo on BOX
    fleet kill-switch on|off [BOX|--all]        the doctor's kill switch on one box or all
    fleet collect [--interval N] [--status|--stop]  the head's standing collector (a Ray actor)

Exit codes: 0 done (status: every box alive); 1 the box refused the change or it failed there
(rolled back, or refused by its read-only mode or its doctor's policy); 2 bad usage; 3 a box is
not reachable (status: some box is not alive); 4 no fleet here (Ray missing, no cluster, or the
box could not join). Nothing here ever runs `ray stop` (it stops every Ray process of the machine).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos_tui.errors import LlmosError

if TYPE_CHECKING:
    from llmos_tui.fleet.view import BoxView, Fleet
    from llmos_tui.journal import Journal

PROG = "llmos-tui fleet"
OK, REFUSED, USAGE, UNREACHABLE, NO_FLEET = 0, 1, 2, 3, 4


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("fleet", help="many GPU boxes from one terminal, on Ray (needs the fleet extra)",
                            description=__doc__.split("\n\n")[1] if __doc__ else None,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", metavar="HOST:PORT", default=None,
                        help="the Ray cluster's address (default: $RAY_ADDRESS, else the cluster this machine runs)")
    parser.add_argument("--journal", metavar="PATH", default=argparse.SUPPRESS,
                        help="the head's journal (where each box's entries are copied)")
    parser.set_defaults(func=_cmd_status, json=False, watch=None)
    actions = parser.add_subparsers(dest="fleet_command", metavar="ACTION")
    # also accepted after the action; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", metavar="HOST:PORT", default=argparse.SUPPRESS,
                        help="the Ray cluster's address (default: $RAY_ADDRESS, else this machine's cluster)")
    common.add_argument("--journal", metavar="PATH", default=argparse.SUPPRESS, help="the head's journal")

    up = actions.add_parser("up", help="join this box to a Ray cluster (label, GPUs) and start its agent")
    up.add_argument("--address", metavar="HOST:PORT", required=True, help="the head's address (ray start --head)")
    up.add_argument("--box", metavar="NAME", default=None, help="this box's name (default: the host name)")
    up.add_argument("--num-gpus", type=int, default=None, metavar="N", help="GPUs to give Ray (default: Ray detects)")
    up.add_argument("--object-store-mb", type=int, default=256, metavar="MB",
                    help="Ray object store size on this box (default 256 MB: the agent moves small data)")
    up.add_argument("--serve-listen", metavar="HOST:PORT", default=None,
                    help="where the box's daemon serves, when the agent starts one (default: [serve] listen)")
    up.add_argument("--readonly", action="store_true",
                    help="the daemon the agent starts refuses every change, also those that come over Ray")
    up.add_argument("--no-join", action="store_true",
                    help="this machine is already a node labelled with the box: only start the agent")
    up.set_defaults(func=_cmd_up)

    status = actions.add_parser("status", parents=[common], help="every box: alive, unavailable, dead, stale (since when), GPUs, "
                                               "engine, model, tok/s, open findings, last change")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", type=float, default=None, metavar="N", help="refresh every N seconds")
    status.set_defaults(func=_cmd_status)

    apply = actions.add_parser("apply", parents=[common], help="change a box's engine settings through its own change transaction")
    apply.add_argument("box", metavar="BOX")
    apply.add_argument("changes", nargs="+", metavar="key=value")
    apply.add_argument("--reason", default="", help="why (journaled on the box)")
    apply.add_argument("--key", default=None, help="idempotency key (default: a new one; the same key again "
                                                   "is applied once)")
    apply.set_defaults(func=_cmd_apply)

    undo = actions.add_parser("undo", parents=[common], help="revert a change on a box (cfg:N or act:N of that box's journal)")
    undo.add_argument("box", metavar="BOX")
    undo.add_argument("entry", metavar="cfg:N")
    undo.add_argument("--key", default=None, help="idempotency key")
    undo.set_defaults(func=_cmd_undo)

    kill = actions.add_parser("kill-switch", parents=[common], help="the doctor's kill switch on one box, or on every box")
    kill.add_argument("mode", choices=("on", "off"))
    kill.add_argument("box", nargs="?", metavar="BOX")
    kill.add_argument("--all", action="store_true", help="every box the fleet knows")
    kill.set_defaults(func=_cmd_kill_switch)

    collect = actions.add_parser("collect", parents=[common],
                                 help="start (or find) the head's standing collector: every box's journal copied into "
                                      "the head's journal every N s, whether or not anyone watches")
    collect.add_argument("--interval", dest="collect_interval", type=float, default=None, metavar="N",
                         help="seconds between rounds (default 2; a running collector keeps its own)")
    what = collect.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="only say whether one runs and how it goes")
    what.add_argument("--stop", action="store_true", help="stop it for good (its cursors stay in the journal)")
    collect.add_argument("--json", action="store_true", help="machine-readable output")
    collect.set_defaults(func=_cmd_collect)

    try:  # `fleet tune` (distributed tuning), where this build has it
        fleet_tune = importlib.import_module("llmos_tui.cli.fleet_tune")
    except ModuleNotFoundError as exc:
        if exc.name != "llmos_tui.cli.fleet_tune":
            raise
    else:
        fleet_tune.add_parser(actions)


# ---- helpers ---------------------------------------------------------------------------------
def _error(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _address(args: argparse.Namespace) -> str | None:
    return getattr(args, "address", None) or os.environ.get("RAY_ADDRESS") or None


def _head_journal(args: argparse.Namespace) -> "Journal | None":
    from llmos_tui.cli.journal import journal_path
    from llmos_tui.journal import Journal
    from llmos_tui.errors import JournalError

    path = journal_path(args)
    try:
        return Journal(path)
    except JournalError as exc:
        print(f"{PROG}: note: the fleet journal is not kept ({exc})", file=sys.stderr)
        return None


def _fleet(args: argparse.Namespace) -> "tuple[Fleet, Journal | None]":
    from llmos_tui.fleet import require_ray
    from llmos_tui.fleet.view import Fleet

    require_ray()
    Fleet.connect(_address(args))
    journal = _head_journal(args)
    return Fleet(journal), journal


def _run(args: argparse.Namespace, body: Any) -> int:
    """Run ``body()``; a missing Ray or cluster is exit 4, a box that cannot be reached 3."""
    try:
        return int(body())
    except ModuleNotFoundError as exc:
        return _error(f"the fleet needs {exc.name}: pip install 'llmos-tui[fleet]'", NO_FLEET)
    except LlmosError as exc:
        from llmos_tui.fleet.view import BoxUnreachable

        if isinstance(exc, BoxUnreachable):
            return _error(str(exc), UNREACHABLE)
        text = str(exc)
        code = NO_FLEET if text.startswith(("no Ray cluster", "the fleet needs Ray")) else REFUSED
        return _error(text, code)
    except KeyboardInterrupt:
        return 130


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    s = max(0.0, now - float(ts))
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def render(views: "list[BoxView]", now: float | None = None) -> str:
    """The fleet as a table (also the TUI's and the README's words)."""
    now = time.time() if now is None else now
    head = ("BOX", "STATE", "SINCE", "GPUS", "ENGINE", "MODEL", "TOK/S", "FINDINGS", "LAST CHANGE")
    rows = [head]
    for v in views:
        info = v.info
        gpus = info.get("gpus") or []
        gpu_text = f"{len(gpus)}" + (f" {gpus[0].get('name')}" if gpus and gpus[0].get("name") else "") if gpus \
            else (f"{v.ray_gpus:g} (ray)" if v.ray_gpus else "0")
        tps = info.get("tok_s")
        findings = info.get("findings") or []
        worst = max((f.get("severity") or "" for f in findings), key=_severity_rank, default="")
        change = info.get("last_change") or {}
        rows.append((v.box, v.state, _ago(v.since, now), gpu_text, str(info.get("engine") or "-"),
                     str(info.get("model") or "-")[:28], f"{tps:.1f}" if isinstance(tps, (int, float)) else "-",
                     f"{len(findings)}" + (f" ({worst})" if worst else ""),
                     str(change.get("message") or "-")[:48]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for v in views:
        if v.why and v.state != "alive":
            lines.append(f"  {v.box}: {v.why}")
    if not views:
        lines.append("(no boxes: run `llmos-tui fleet up --address HEAD:PORT` on each box)")
    return "\n".join(lines)


def _severity_rank(severity: str) -> int:
    return {"info": 1, "warning": 2, "error": 3, "critical": 4}.get(severity, 0)


def _answer(box: str, answer: dict[str, Any]) -> int:
    """Print a change's answer in one line; its exit code."""
    text = str(answer.get("message") or answer.get("error") or answer.get("state") or answer)
    replay = " (a retry: the first answer, applied once)" if answer.get("replayed") else ""
    print(f"{box}: {text}{replay}")
    return OK if answer.get("ok") else REFUSED


# ---- handlers ----------------------------------------------------------------------------------
def _cmd_status(args: argparse.Namespace) -> int:
    if args.watch is not None and args.watch <= 0:
        return _error(f"--watch must be a positive number of seconds, got {args.watch:g}", USAGE)

    def body() -> int:
        fleet, journal = _fleet(args)
        try:
            while True:
                views = fleet.poll()
                if args.json:
                    print(json.dumps({"ts": time.time(), "boxes": [v.to_dict() for v in views]}, default=str),
                          flush=True)
                else:
                    if args.watch is not None and sys.stdout.isatty():
                        print("\x1b[H\x1b[2J", end="")
                    print(render(views), flush=True)
                    from llmos_tui.fleet.collector import collector_status

                    print(_collector_line(collector_status()), flush=True)
                if args.watch is None:
                    return OK if views and all(v.alive for v in views) else UNREACHABLE
                time.sleep(args.watch)
        finally:
            if journal is not None:
                journal.close()

    return _run(args, body)


def _cmd_apply(args: argparse.Namespace) -> int:
    changes: dict[str, str] = {}
    for pair in args.changes:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            return _error(f"changes are key=value, got {pair!r}", USAGE)
        changes[name.strip()] = value.strip()

    def body() -> int:
        fleet, journal = _fleet(args)
        try:
            return _answer(args.box, fleet.change(args.box, "apply", changes, args.reason or "fleet apply",
                                                  key=args.key))
        finally:
            if journal is not None:
                journal.close()

    return _run(args, body)


def _cmd_undo(args: argparse.Namespace) -> int:
    from llmos_tui.journal.records import parse_entry_id

    try:
        parse_entry_id(args.entry)
    except (LlmosError, ValueError) as exc:
        return _error(str(exc), USAGE)

    def body() -> int:
        fleet, journal = _fleet(args)
        try:
            return _answer(args.box, fleet.change(args.box, "undo", args.entry, key=args.key))
        finally:
            if journal is not None:
                journal.close()

    return _run(args, body)


def _cmd_kill_switch(args: argparse.Namespace) -> int:
    if bool(args.box) == bool(args.all):
        return _error("kill-switch needs a BOX or --all (not both)", USAGE)

    def body() -> int:
        fleet, journal = _fleet(args)
        try:
            if args.box:
                return _answer(args.box, fleet.change(args.box, "kill_switch", args.mode == "on"))
            code = OK
            views = fleet.poll()
            if not views:
                return _error("the fleet has no boxes", UNREACHABLE)
            for view in views:
                if not view.alive:
                    print(f"{view.box}: not changed: the box is {view.state} ({view.why})")
                    code = max(code, UNREACHABLE)
                    continue
                try:
                    code = max(code, _answer(view.box, fleet.change(view.box, "kill_switch", args.mode == "on")))
                except LlmosError as exc:
                    print(f"{view.box}: not changed: {exc}")
                    code = max(code, UNREACHABLE)
            return code
        finally:
            if journal is not None:
                journal.close()

    return _run(args, body)


def _collector_line(status: "dict[str, Any] | None", now: float | None = None) -> str:
    if status is None:
        return "collector: none runs (the head's journal keeps up only while a view polls: `llmos-tui fleet collect`)"
    now = time.time() if now is None else now
    line = (f"collector: running on the head (pid {status.get('pid')}), every {status.get('interval_s'):g} s into "
            f"{status.get('journal')}; {status.get('rounds')} rounds, last {_ago(status.get('last_round'), now)} ago, "
            f"{status.get('copied')} entries copied since it started")
    return line + (f"; last round failed: {status['last_error']}" if status.get("last_error") else "")


def _cmd_collect(args: argparse.Namespace) -> int:
    if args.collect_interval is not None and args.collect_interval <= 0:
        return _error(f"--interval must be a positive number of seconds, got {args.collect_interval:g}", USAGE)

    def body() -> int:
        from llmos_tui.cli.journal import journal_path
        from llmos_tui.fleet import require_ray
        from llmos_tui.fleet.collector import INTERVAL_S, collector_status, start_collector, stop_collector
        from llmos_tui.fleet.view import Fleet

        require_ray()
        Fleet.connect(_address(args))
        if args.stop:
            stopped = stop_collector()
            print("collector stopped" if stopped else "collector: none runs")
            return OK
        if args.status:
            status = collector_status()
        else:
            path = Path(journal_path(args)).expanduser().resolve()
            status = start_collector(path, interval_s=args.collect_interval or INTERVAL_S)
            if status.get("found") and status.get("journal") != str(path):
                print(f"{PROG}: note: the running collector writes to {status.get('journal')}, not {path} "
                      "(`fleet collect --stop` first to change it)", file=sys.stderr)
        if args.json:
            print(json.dumps(status, default=str))
        else:
            if status is not None and not args.status:
                print("found the running collector" if status.get("found") else "collector started")
            print(_collector_line(status))
        return OK if status is not None else UNREACHABLE

    return _run(args, body)


def auth_problem() -> str | None:
    """Why this box would join without Ray's token authentication, or None. The fleet keeps it on:
    every box needs the head's token (``ray get-auth-token --generate`` on the head writes
    ``~/.ray/auth_token``; copy it, owner-only, to each box, or set RAY_AUTH_TOKEN[_PATH])."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        return (f"RAY_AUTH_MODE={mode}: the fleet keeps Ray's token authentication on; unset it (or set it "
                "to token)")
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if not path.is_file():
        return (f"no Ray auth token at {path}: run `ray get-auth-token --generate` on the head and copy "
                "its ~/.ray/auth_token (owner-only) to this box, or set RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH")
    return None


def default_box_name() -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]).strip("-_.")
    return name[:63] or "box"


def _cmd_up(args: argparse.Namespace) -> int:
    from llmos_tui.fleet import LABEL, check_box_name

    box = args.box or default_box_name()
    bad = check_box_name(box)
    if bad:
        return _error(bad, USAGE)
    if args.num_gpus is not None and args.num_gpus < 0:
        return _error(f"--num-gpus must be 0 or more, got {args.num_gpus}", USAGE)

    def body() -> int:
        from llmos_tui.fleet import require_ray
        from llmos_tui.fleet.agent import start_agent
        from llmos_tui.fleet.view import Fleet

        require_ray()
        problem = auth_problem()
        if problem:
            return _error(problem, NO_FLEET)
        if not args.no_join:
            ray_cli = Path(sys.executable).parent / "ray"
            ray_bin = str(ray_cli) if ray_cli.exists() else shutil.which("ray")
            if ray_bin is None:
                return _error("the `ray` command is not installed: pip install 'llmos-tui[fleet]'", NO_FLEET)
            command = [ray_bin, "start", f"--address={args.address}", f"--labels={LABEL}={box}",
                       f"--object-store-memory={args.object_store_mb * 1024 * 1024}"]
            if args.num_gpus is not None:
                command.append(f"--num-gpus={args.num_gpus}")
            print(f"joining {args.address} as box {box}: {' '.join(command)}", flush=True)
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "token"})
            if done.returncode != 0:
                lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
                return _error(f"ray start failed ({done.returncode}): {lines[-1] if lines else 'no output'}", NO_FLEET)
        Fleet.connect(args.address)
        serve_args = ["--listen", args.serve_listen] if args.serve_listen else []
        if args.readonly:
            serve_args.append("--readonly")
        snap = start_agent(box, serve_args=serve_args)
        if not snap.get("daemon"):
            print(f"box {box}: the agent runs, but its daemon does not answer: {snap.get('error')}")
            return UNREACHABLE
        print(f"box {box}: agent up (pid {snap.get('agent_pid')}), daemon pid {snap.get('daemon_pid')}, "
              f"engine {snap.get('engine')}, model {snap.get('model')}")
        return OK

    return _run(args, body)


def new_key() -> str:
    return f"fleet-{uuid.uuid4().hex}"
