"""`llmos-tui exporter`: Prometheus ``/metrics`` without the TUI.

By default it runs no engine of its own (a TUI or another llmos-tui may be serving on this box):
it exports the GPUs and the host (NVML, psutil, or a replayed trace with ``--replay``) and what
the journal holds (actions by outcome, findings, crashes, tuning results). ``--engine`` makes it a
headless cockpit: it starts the engine and the doctor too, and exports them.

A running TUI serves the same metrics when the config sets ``[exporter] listen``.

Every option that takes a value is checked before anything starts: a bad ``--listen`` is one
line and exit 1 (as a bad ``[exporter] listen`` in the config); a bad ``--replay``,
``--replay-speed`` or ``--duration`` is one line and exit 2 (bad usage).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from llmos_tui.cli.checks import BadOption, bad_usage, number, readable_file
from llmos_tui.cli.support import guarded


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "exporter",
        help="serve Prometheus /metrics (GPU, host, engine, doctor, journal, tuner)",
        description="Serve Prometheus metrics on /metrics. Binds to loopback unless --listen names an address "
                    "(0.0.0.0:9464 listens on every interface).",
    )
    parser.add_argument("--listen", metavar="[HOST:]PORT", default=None,
                        help="address to serve on (default: [exporter] listen of the config, else 127.0.0.1:9464)")
    parser.add_argument("--engine", action="store_true",
                        help="also start the engine and the doctor and export them (a headless cockpit)")
    parser.add_argument("--replay", metavar="FILE", default=argparse.SUPPRESS,
                        help="GPU and host telemetry from a recorded trace instead of NVML")
    parser.add_argument("--replay-speed", default=None, metavar="X",
                        help="replay X times as fast as recorded (0: as fast as it reads; default 1)")
    parser.add_argument("--duration", default=None, metavar="SECONDS",
                        help="stop after SECONDS (default: until Ctrl-C or SIGTERM)")
    parser.set_defaults(func=cmd_exporter)


@guarded
def cmd_exporter(args: argparse.Namespace) -> int:
    from llmos_tui.cli.main import config_from_args
    from llmos_tui.core.wiring import build_core
    from llmos_tui.exporters.prometheus import is_loopback, parse_listen, start_exporter

    replay = getattr(args, "replay", None)
    try:
        readable_file(replay, "--replay")
        speed = number(args.replay_speed, "--replay-speed", minimum=0.0, default=1.0)
        duration = number(args.duration, "--duration", minimum=0.0, above=True)
        if args.replay_speed is not None and replay is None:
            raise BadOption("--replay-speed needs --replay FILE (a trace to replay)")
    except BadOption as problem:
        return bad_usage("exporter", problem)
    config = config_from_args(args)
    listen = args.listen or config.exporter_listen
    host, port = parse_listen(listen)  # a bad address is one line before anything starts
    mode = "replay" if replay else "live"
    operator = build_core(config, mode, replay=replay, replay_speed=speed,
                          journal=args.engine, doctor=args.engine, endpoint=False)
    stop = threading.Event()
    try:
        for problem in operator.problems:
            print(f"llmos-tui exporter: note: {problem}", file=sys.stderr)
        if args.engine:
            error = operator.try_start_engine()
            if error:
                print(f"llmos-tui exporter: the engine did not start: {error} (exporting without it)",
                      file=sys.stderr)
        relay = None if args.engine else _daemon_relay(config)
        exporter = start_exporter(operator, listen, engine=args.engine, extra=[relay] if relay else [])
        operator.on_close(exporter.close)
        if relay is not None:
            operator.on_close(relay.close)
            print(f"relaying the metrics of the daemon at {relay.socket} (engine, doctor, tuner, requests)",
                  flush=True)
        where = "" if is_loopback(host) else "  (reachable from other machines)"
        print(f"serving {exporter.url}{where}", flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait(duration)
    finally:
        operator.close()
    return 0


def _daemon_relay(config: object) -> object | None:
    """The relay of the daemon serving this journal (`llmos-tui serve`), when one runs."""
    try:
        from llmos_tui.serve.attached import find_daemon
        from llmos_tui.serve.relay import DaemonMetrics
    except ModuleNotFoundError:  # no serve extra: no daemon to read
        return None
    socket = find_daemon(config.paths.runtime_dir, config.journal_file)  # type: ignore[attr-defined]
    return DaemonMetrics(socket) if socket is not None else None
