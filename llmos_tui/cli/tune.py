"""`llmos-tui tune`: a tuning study without the TUI.

Starts the engine on the configured model, pauses it, runs the study (a progress line per trial:
what is tried, its result, the best so far), verifies the winner A/B against the running
configuration, and with ``--apply`` applies a significant gain through the change transaction
(journaled with source ``tuner``; ``llmos-tui journal undo`` reverts it). Ctrl+C stops cleanly:
the study stays in the journal, resumable with ``--resume STUDY``.

Exit code: 0 done (a best configuration found), 1 nothing feasible or an error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from llmos_tui.cli.support import guarded
from llmos_tui.errors import LlmosError


def register(subparsers: Any) -> None:
    from llmos_tui.cli.main import _engine_parent

    engine = _engine_parent(defaults=False)
    tune = subparsers.add_parser(
        "tune", parents=[engine],
        help="tune the runtime parameters (Bayesian search, each trial a benchmark in a fresh engine)",
        description="Search n_gpu_layers, batch sizes, threads, flash attention and KV cache types for the "
                    "fastest configuration of this model on this machine; verify the winner against the "
                    "running configuration (A/B rounds) and, with --apply, apply a significant gain as a "
                    "journaled change. Exit code: 0 done, 1 nothing feasible or an error, 130 interrupted.")
    tune.add_argument("--trials", type=int, metavar="N", help="trials in the study (12; a resumed study: its own)")
    tune.add_argument("--objective", choices=("tg", "pp", "ttft", "mix", "traffic"), default=None,
                      help="what to maximise: generation tok/s (tg, default), prompt tok/s (pp), time to first "
                           "token (ttft), a weighted mix, or the mix of this operator's chat traffic")
    tune.add_argument("--weights", metavar="pp=W,tg=W", help="weights of --objective mix (0.5 each)")
    tune.add_argument("--vram-budget", metavar="X", default=None, help="GPU memory budget: 90%% (default) or MiB")
    tune.add_argument("--rss-budget", metavar="X", default=None, help="host memory budget for CPU runs: %% or MiB")
    tune.add_argument("--ctx", type=int, metavar="N", help="the context requirement (fixed, not searched)")
    tune.add_argument("--strategy", choices=("gp", "rf", "et", "random"), default=None,
                      help="optimiser: Gaussian process (gp, default), random forest, extra trees, random search")
    tune.add_argument("--resume", metavar="STUDY", help="continue a stopped study (std:N or N)")
    tune.add_argument("--apply", action="store_true", help="apply a verified, significant gain")
    tune.add_argument("--no-verify", action="store_true", help="skip the A/B verification (nothing is applied)")
    tune.add_argument("--rounds", type=int, default=4, metavar="N", help="A/B verification rounds (4)")
    tune.add_argument("--n-prompt", type=int, default=128, metavar="N", help="prompt tokens per bench rep (128)")
    tune.add_argument("--n-gen", type=int, default=32, metavar="N", help="generated tokens per bench rep (32)")
    tune.add_argument("--depth", type=int, default=0, metavar="N", help="KV depth before each rep (0)")
    tune.add_argument("--reps", type=int, default=3, metavar="N", help="bench repetitions per trial (3)")
    tune.add_argument("--study-seed", type=int, default=0, metavar="N", help="optimiser seed (0)")
    tune.add_argument("--no-warm-start", action="store_true", help="ignore earlier trials in the journal")
    tune.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    tune.set_defaults(func=cmd_tune)


def _study_id(text: str | None) -> int | None:
    if text is None:
        return None
    raw = text.strip().lower().removeprefix("std:").removeprefix("study:")
    if not raw.isdigit():
        raise LlmosError(f"bad study id {text!r}: expected std:N or N")
    return int(raw)


def _build(config: Any) -> Any:
    from llmos_tui.core.wiring import build_core

    return build_core(config, mode="oneshot", doctor=False)


def _fmt_config(config: dict[str, Any]) -> str:
    short = {"n_gpu_layers": "ngl", "n_batch": "b", "n_ubatch": "ub", "n_threads": "t", "n_threads_batch": "tb",
             "flash_attn": "fa", "type_k": "k", "type_v": "v"}
    return " ".join(f"{short.get(k, k)}={v}" for k, v in config.items())


@guarded
def cmd_tune(args: argparse.Namespace) -> int:
    from llmos_tui.cli.main import config_from_args
    from llmos_tui.tuning.measure import BenchSpec
    from llmos_tui.tuning.objective import parse_weights

    config = config_from_args(args)
    resume = _study_id(args.resume)
    if args.trials is not None and args.trials < 1:
        raise LlmosError(f"--trials must be at least 1, got {args.trials}")
    for name in ("n_prompt", "n_gen", "reps", "rounds"):
        if getattr(args, name) < 1 and name != "n_prompt":
            raise LlmosError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    weights = parse_weights(args.weights) if args.weights else None
    spec = BenchSpec(n_prompt=args.n_prompt, n_gen=args.n_gen, depth=args.depth, reps=args.reps)
    out = sys.stderr if args.json else sys.stdout
    op = _build(config)
    try:
        for problem in op.problems:
            print(f"note: {problem}", file=out)
        print(f"starting the engine on {config.engine.model_path} ...", file=out, flush=True)
        op.start_engine()
        from llmos_tui.tuning.runner import Tuner

        tuner = Tuner.for_operator(op)
        tuner.subscribe(lambda ev: _progress(ev, out))
        options = dict(trials=args.trials, objective=args.objective or "tg", weights=weights,
                       vram_budget=args.vram_budget or "90%", rss_budget=args.rss_budget, ctx=args.ctx,
                       strategy=args.strategy or "gp", resume=resume, apply=args.apply, spec=spec, seed=args.study_seed,
                       verify_rounds=args.rounds, warm_start=not args.no_warm_start, verify=not args.no_verify)
        if resume is not None:  # the study's own settings, unless given again
            for key, given in (("objective", args.objective), ("strategy", args.strategy),
                               ("vram_budget", args.vram_budget)):
                if given is None:
                    options.pop(key)
        box: dict[str, Any] = {}
        finished = threading.Event()  # not thread.is_alive(): a join interrupted by Ctrl+C can lie

        def run() -> None:
            try:
                box["report"] = tuner.run(**options)
            except BaseException as exc:  # noqa: BLE001 - reported below, one line
                box["error"] = exc
            finally:
                finished.set()

        thread = threading.Thread(target=run, name="tune", daemon=True)
        thread.start()
        interrupted = False
        while not finished.is_set():
            try:
                finished.wait(0.2)
            except KeyboardInterrupt:
                if not interrupted:
                    interrupted = True
                    print("\nstopping: the trial in flight is abandoned, the study stays resumable ...",
                          file=out, flush=True)
                    tuner.stop()
        if "error" in box:
            exc = box["error"]
            raise exc if isinstance(exc, LlmosError) else LlmosError(f"{type(exc).__name__}: {exc}")
        report = box["report"]
        _final(report, out)
        if args.json:
            print(json.dumps(report.to_dict(), indent=1, default=str))
        return 130 if interrupted else report.exit_code
    finally:
        op.close()


def _progress(ev: dict[str, Any], out: Any) -> None:
    kind = ev["kind"]
    if kind == "study":
        word = "resumed" if ev.get("resumed") else "started"
        obj = ev.get("objective") or {}
        dims = ", ".join(f"{d['name']}({len(d.get('values', []))})" for d in (ev.get("space") or {}).get("dimensions", []))
        print(f"study std:{ev['study_id']} {word}: objective {obj.get('name')} ({'max' if obj.get('maximize') else 'min'}), "
              f"{ev.get('trials')} trials, strategy {ev.get('strategy')}", file=out)
        if dims:
            print(f"  space: {dims}", file=out)
        if ev.get("note"):
            print(f"  {ev['note']}", file=out)
        if ev.get("prior"):
            print(f"  {ev['prior']} (steers the first trials, fades as measurements come)", file=out)
        print("  serving engine paused for the study", file=out, flush=True)
    elif kind == "warmstart":
        print(f"  {ev['summary']}", file=out, flush=True)
    elif kind == "trial":
        t = ev["trial"]
        bar = _bar(ev["done"], ev["total"])
        result = f"{t['value']:.2f}" if t["value"] is not None else f"{t['outcome'].upper()} ({t['reason'][:90]})"
        best = ev.get("best")
        best_text = f"best {best['mean']:.2f} (n={best['n']})" if best else "best -"
        print(f"{bar} {ev['done']:>3}/{ev['total']} [{t['origin'][:40]}] {_fmt_config(t['config'])} -> "
              f"{result}  {best_text}", file=out, flush=True)
    elif kind == "verify_round":
        a, b = ev.get("a"), ev.get("b")
        fa = f"{a:.2f}" if a is not None else "failed"
        fb = f"{b:.2f}" if b is not None else "failed"
        print(f"  verify round {ev['round']}/{ev['rounds']}: running {fa}  candidate {fb}", file=out, flush=True)


def _bar(done: int, total: int, width: int = 12) -> str:
    filled = int(width * done / max(1, total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _final(report: Any, out: Any) -> None:
    obj = report.objective or {}
    unit = {"tg": "tok/s", "pp": "tok/s", "ttft": "ms"}.get(obj.get("name"), "tok/s")
    print("", file=out)
    failed = [t for t in report.trials if not t.ok]
    print(f"study std:{report.study_id}: {report.status}, {len(report.trials)} trials "
          f"({len(failed)} failed), objective {obj.get('name')} in {unit}", file=out)
    if report.ranking:
        print(f"  {'#':>2} {'mean':>10} {'n':>3} {'spread':>7}  configuration", file=out)
        for i, row in enumerate(report.ranking, 1):
            spread = f"{row['spread'] * 100:.1f}%" if row.get("spread") is not None else "-"
            print(f"  {i:>2} {row['mean']:>10.2f} {row['n']:>3} {spread:>7}  {_fmt_config(row['config'])}", file=out)
    for t in failed[:8]:
        print(f"  failed #{t.index} {t.outcome}: {_fmt_config(t.config)}: {t.reason[:120]}", file=out)
    if report.verdict:
        v = report.verdict
        if v.get("median") is not None and v.get("ci_low") is not None:
            print(f"  verified speedup over the running configuration: {v['median']:.3f}x, 95% CI "
                  f"[{v['ci_low']:.3f}, {v['ci_high']:.3f}], {v['rounds']} A/B rounds -> "
                  f"{'significant' if v['significant'] else 'not significant'}", file=out)
    if report.applied:
        print(f"  apply: {report.applied.get('state')}: {report.applied.get('message')}", file=out)
    print(report.message, file=out, flush=True)
