"""The `status` and `record` subcommands: telemetry without the TUI.

``register(subparsers)`` adds them to the `llmos-tui` argument parser; each handler
takes the parsed ``args`` and returns an exit code, printing one clear line on error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmos_tui.telemetry.sample import Sample

from llmos_tui.cli.support import guarded
from llmos_tui.errors import LlmosError

# status waits this long after creating the host source so that CPU % covers a real interval
_CPU_BASELINE_S = 0.25


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    status = subparsers.add_parser(
        "status",
        help="GPUs, host, and the engine of every llmos-tui running on this box",
        description="Print one snapshot of GPU (NVML) and host telemetry, and the live state (engine, doctor) "
                    "that every running llmos-tui publishes on its local endpoint; says so when none runs.",
    )
    status.add_argument("--json", action="store_true", help="print the sample as JSON")
    status.add_argument(
        "--watch",
        type=_positive_seconds,
        metavar="SECONDS",
        help="print a new snapshot every SECONDS until Ctrl-C (JSON: one object per line)",
    )
    status.set_defaults(func=cmd_status)

    record = subparsers.add_parser(
        "record",
        help="record GPU and host telemetry to a JSON-lines trace",
        description="Sample GPU and host telemetry into FILE (JSON lines) until the duration ends or Ctrl-C.",
    )
    record.add_argument("file", metavar="FILE", help="trace file to write (replaced if it exists)")
    record.add_argument("--interval", type=_positive_seconds, default=1.0, help="seconds between samples (1)")
    record.add_argument("--duration", type=_positive_seconds, metavar="SECONDS", help="stop after SECONDS")
    record.set_defaults(func=cmd_record)




def _instances() -> list[dict[str, object]]:
    """The live state every running llmos-tui of this user publishes on its local endpoint."""
    from llmos_tui.core.endpoint import read_endpoints
    from llmos_tui.paths import default_paths

    return read_endpoints(default_paths().runtime_dir)


def _render(sample: "Sample", instances: list[dict[str, object]], as_json: bool, compact: bool) -> str:
    from llmos_tui.paths import default_paths
    from llmos_tui.telemetry.format import format_status

    running = [i for i in instances if "error" not in i]
    if running and sample.engine is None:
        sample.engine = running[0].get("engine")  # this box's engine, as its llmos-tui sees it
    if as_json:
        data = sample.to_dict()
        data["instances"] = instances
        return json.dumps(data, separators=(",", ":"), default=str) if compact else json.dumps(data, indent=2, default=str)
    if not instances:
        where = default_paths().runtime_dir
        return format_status(sample, no_engine=f"no llmos-tui running on this box (no endpoint in {where})")
    lines = [format_status(sample)]
    for inst in instances:
        if "error" in inst:
            lines.append(f"llmos-tui pid {inst.get('pid')}: {inst['error']}")
            continue
        engine = inst.get("engine") or {}
        doctor = inst.get("doctor") or {}
        extra = " REPLAY" + (" (synthetic trace)" if (inst.get("replay") or {}).get("synthetic") else "") \
            if inst.get("replay") else ""
        lines.append(f"llmos-tui pid {inst.get('pid')} ({inst.get('mode')}{extra}{', read-only' if inst.get('readonly') else ''}): "
                     f"engine {engine.get('state')}, model {engine.get('model') or '-'}, {engine.get('summary', '')}; "
                     f"doctor {len(doctor.get('open') or [])} open finding(s)"
                     + (", kill switch ON" if doctor.get("kill_switch") else ""))
        if inst.get("mode") == "serve":
            lines.append(_serve_line(inst))
    return "\n".join(lines)


def _serve_line(inst: dict[str, object]) -> str:
    """A daemon's requests, read from its control socket (`llmos-tui serve`)."""
    from llmos_tui.paths import default_paths

    pid = inst.get("pid")
    try:
        from llmos_tui.serve.client import DaemonClient
        from llmos_tui.serve.sockets import socket_path

        path = socket_path(default_paths().runtime_dir, pid if isinstance(pid, int) else None)
        with DaemonClient(path, timeout=3.0) as client:
            serve = client.snapshot().get("serve") or {}
    except ModuleNotFoundError as exc:
        return f"  a daemon (its numbers need the serve extra: {exc.name} is missing)"
    except LlmosError as exc:
        return f"  a daemon whose control socket did not answer: {exc}"
    if not isinstance(serve, dict):
        return "  a daemon"
    rejected = serve.get("rejected") or {}
    refused = sum(v for v in rejected.values() if isinstance(v, int)) if isinstance(rejected, dict) else 0
    hold = f", holding new requests ({serve['hold']})" if serve.get("hold") else ""
    return (f"  serving {serve.get('url')}: {serve.get('served')} requests served, {serve.get('in_flight')} in flight, "
            f"{serve.get('queued')} queued, {refused} refused{hold}; attach: llmos-tui --attach {path}")


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    """One snapshot (or one every --watch seconds until Ctrl-C): this box's GPUs and host, and
    the engine of every llmos-tui running here (read from its local endpoint). Exits 0."""
    from llmos_tui.telemetry.sampler import Sampler

    sampler = Sampler(history=2)
    try:
        time.sleep(_CPU_BASELINE_S)
        if not args.watch:
            print(_render(sampler.poll_once(), _instances(), args.json, compact=False))
            return 0
        clear = not args.json and sys.stdout.isatty()
        try:
            while True:
                started = time.monotonic()
                text = _render(sampler.poll_once(), _instances(), args.json, compact=True)
                if clear:
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(text, flush=True)
                time.sleep(max(0.0, args.watch - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return 0
    finally:
        sampler.close()


@guarded
def cmd_record(args: argparse.Namespace) -> int:
    """Record GPU + host samples to a trace (headless; no engine needed)."""
    from llmos_tui.telemetry.replay import Recorder
    from llmos_tui.telemetry.sampler import Sampler

    recorder = Recorder(args.file, interval=args.interval, command="record")
    failure: list[str] = []

    def write(sample: "Sample") -> None:
        if failure:
            return
        try:
            recorder.write(sample)
        except LlmosError as exc:
            failure.append(str(exc))

    sampler = Sampler(interval=args.interval, history=60)
    sampler.subscribe(write)
    until = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
    print(f"recording to {args.file} every {args.interval:g} s {until}", file=sys.stderr)
    deadline = time.monotonic() + args.duration if args.duration else None
    sampler.start()
    try:
        while not failure and sampler.running:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            time.sleep(0.2 if remaining is None else min(0.2, remaining))
    except KeyboardInterrupt:
        pass
    finally:
        sampler.close()
        recorder.close()
    if failure:
        print(f"error: {failure[0]} (after {recorder.count} samples)", file=sys.stderr)
        return 1
    note = ""
    latest = sampler.latest
    if latest is not None and not latest.gpus:
        note = f" (host only: No NVIDIA GPU: {latest.nvml_error})"
    print(f"recorded {recorder.count} samples to {args.file}{note}", file=sys.stderr)
    return 0
