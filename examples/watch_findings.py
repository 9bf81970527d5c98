"""Watch the doctor: print every finding and action as one line, for a while.

    python examples/watch_findings.py --seconds 10 [--kill]

With ``--kill`` the engine is killed once (SIGKILL), so there is something to see: the doctor
finds the crash and, under the default policy, restarts the engine and verifies it.
Uses only the public API (``llmos_tui.core``).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse  # noqa: E402

from llmos_tui.core import build_core  # noqa: E402


def main() -> int:
    args, config = parse(__doc__.splitlines()[0],
                         seconds={"type": float, "default": 10.0, "help": "how long to watch (10)"},
                         kill={"action": "store_true", "help": "kill the engine once to make a finding"})
    seen: list[str] = []

    def on_doctor(event) -> None:  # runs on the doctor's thread
        finding = event.finding
        what = f"#{finding.id} {finding.severity} {finding.title}" if finding is not None else ""
        line = f"{time.strftime('%H:%M:%S')} {event.kind:<8} {what} {event.message}".rstrip()
        seen.append(line)
        print(line, flush=True)

    with build_core(config, mode="live", endpoint=False) as op:
        for problem in op.problems:
            print(f"note: {problem}")
        op.start_engine()
        unsubscribe = op.subscribe(findings=on_doctor)
        print(f"watching {op.snapshot()['engine']['model']} for {args.seconds:g} s", flush=True)
        if args.kill:
            time.sleep(0.5)
            op.supervisor.kill(signal.SIGKILL)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
        settle = time.monotonic() + 60  # a repair under way finishes before we report
        while op.doctor is not None and op.doctor.busy and time.monotonic() < settle:
            time.sleep(0.1)
        unsubscribe()
        state = op.snapshot()["engine"]["state"]
    print(f"{len(seen)} doctor event(s); engine {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
