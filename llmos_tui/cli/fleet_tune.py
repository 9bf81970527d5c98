"""`llmos-tui fleet tune`: one study per hardware class over the fleet's boxes, on Ray.

    llmos-tui fleet tune --address HEAD:6379 --trials 40 [--boxes a,b] [--per-box 1] [--apply]

``add_parser(subparsers)`` adds ``tune`` to the ``fleet`` command's subparsers (``cli/fleet.py``
registers it); ``run(args)`` runs it. The head's journal (``--journal``, else the configured one)
keeps each study and its trials with their box; running the command again after the head
restarted resumes the studies it finds there. Exit code: 0 done, 1 an error or a rolling apply
that stopped at a box, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llmos_tui.cli.support import guarded
from llmos_tui.errors import LlmosError


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tune", help="tune every hardware class of the fleet: trials on the boxes, the winner verified and rolled out",
        description="One study per hardware class (same GPU model and count, same model file); its trials run on "
                    "the class's boxes as Ray tasks, one at a time per box, proposals in constant-liar batches; the "
                    "winner is verified A/B on each box by the box itself and applied box by box through its own "
                    "change transaction, stopping at the first box that does not verify.")
    p.add_argument("--address", metavar="HOST:PORT", help="the Ray cluster (default: RAY_ADDRESS, else 'auto')")
    p.add_argument("--boxes", metavar="A,B", help="only these boxes (default: every labelled box)")
    p.add_argument("--per-box", type=int, default=1, metavar="N", help="trials at a time on one box (1)")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trials per hardware class")
    p.add_argument("--objective", choices=("tg", "pp", "ttft", "mix"), default="tg")
    p.add_argument("--strategy", choices=("gp", "rf", "et", "random"), default="gp")
    p.add_argument("--study-seed", type=int, default=0, metavar="N")
    p.add_argument("--trial-timeout", type=float, metavar="S", help="a trial's budget (default: the box's own)")
    p.add_argument("--n-prompt", type=int, default=128, metavar="N")
    p.add_argument("--n-gen", type=int, default=32, metavar="N")
    p.add_argument("--reps", type=int, default=3, metavar="N")
    p.add_argument("--rounds", type=int, default=12, metavar="N", help="the most A/B rounds on each box (12)")
    p.add_argument("--no-verify", action="store_true", help="no verification: nothing is applied")
    p.add_argument("--apply", action="store_true", help="apply the verified winner box by box")
    p.add_argument("--no-warm-start", action="store_true")
    p.add_argument("--fresh", action="store_true", help="start new studies even where the journal has one to resume")
    p.add_argument("--journal", metavar="PATH", default=argparse.SUPPRESS, help="the head's journal")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    return p


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    return {"bench": {"n_prompt": args.n_prompt, "n_gen": args.n_gen, "reps": args.reps},
            "verify_rounds": args.rounds}


def _say(event: dict[str, Any]) -> None:
    kind = event.get("kind")
    if kind == "trial":
        what = f"{event['value']:.2f}" if event.get("ok") else f"{event.get('outcome')}: {event.get('reason')}"
        print(f"  #{event['index']} on {event['box']}: {what}", flush=True)
    elif kind in ("resumed", "warmstart"):
        print(f"  {kind}: {json.dumps({k: v for k, v in event.items() if k != 'kind'})}", flush=True)
    elif kind == "verdict":
        print(f"  verdict on {event['box']}: {(event.get('verdict') or {}).get('message')}", flush=True)
    elif kind == "applied":
        print(f"  applied on {event['box']}: {(event.get('result') or {}).get('message')}", flush=True)


@guarded
def run(args: argparse.Namespace) -> int:
    if args.trials < 1 or args.per_box < 1:
        raise LlmosError("--trials and --per-box must be at least 1")
    from llmos_tui.fleet import require_ray

    require_ray()  # a one-line error without the [fleet] extra
    from llmos_tui.cli.journal import journal_path
    from llmos_tui.fleet.view import Fleet
    from llmos_tui.fleet.ray_exec import RayExecutor
    from llmos_tui.fleet.tune import FleetTuner, summary
    from llmos_tui.journal import Journal

    address = args.address or None
    Fleet.connect(address)
    journal = Journal(journal_path(args))
    try:
        spec = _spec(args)
        executor = RayExecutor(spec=spec)
        boxes = [b.strip() for b in args.boxes.split(",") if b.strip()] if args.boxes else None
        tuner = FleetTuner(executor, journal, trials=args.trials, per_box=args.per_box, objective=args.objective,
                           strategy=args.strategy, seed=args.study_seed, spec=spec, trial_timeout=args.trial_timeout,
                           verify=not args.no_verify, apply=args.apply, warm_start=not args.no_warm_start,
                           resume=not args.fresh, on_event=None if args.json else _say)
        try:
            reports = tuner.run(boxes)
        except ValueError as exc:
            raise LlmosError(str(exc)) from None
        except KeyboardInterrupt:
            tuner.stop()
            return 130
        finally:
            for name, why in executor.left_out.items():
                print(f"llmos-tui fleet tune: box {name} left out: {why}", file=sys.stderr)
    finally:
        journal.close()
        Fleet.disconnect()
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], default=str, indent=2))
    else:
        print(summary(reports))
    stopped = any("stopped at box" in r.message for r in reports)
    return 1 if stopped else 0


__all__ = ["add_parser", "run"]
