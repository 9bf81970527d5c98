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
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.config import Config
    from llmos_tui.core.operator import Operator
    from llmos_tui.tuning.report import StudyReport
    from llmos_tui.tuning.study_config import StudyConfig

from llmos_tui.cli.support import guarded
from llmos_tui.errors import LlmosError


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from llmos_tui.cli.main import _engine_parent

    engine = _engine_parent(defaults=False)
    tune = subparsers.add_parser(
        "tune", parents=[engine],
        help="tune the runtime parameters (Bayesian search, each trial a benchmark in a fresh engine)",
        description="Search n_gpu_layers, batch sizes, threads, flash attention and KV cache types for the "
                    "fastest configuration of this model on this machine; verify the winner against the "
                    "running configuration (A/B rounds) and, with --apply, apply a significant gain as a "
                    "journaled change. Exit code: 0 done, 1 nothing feasible, an error, or an apply refused, rolled back or "
                    "failed; 130 interrupted.")
    tune.add_argument("--trials", type=int, metavar="N", help="trials in the study (12; a resumed study: its own); a configuration refused before "
                           "loading (the memory estimate, the model's header) takes no time and does not count")
    tune.add_argument("--objective", default=None, metavar="OBJ",
                      help="what to maximise: generation tok/s (tg, default), prompt tok/s (pp), time to first "
                           "token (ttft), a weighted mix, the mix of this operator's chat traffic (traffic), or a "
                           "service level replaying the journal's request shapes, e.g. "
                           "\"throughput@4 ttft_p99<=2s\" or \"tg ttft_p99<=500ms\" (a broken bound: infeasible). tg keeps "
                           "n_threads_batch, n_batch and n_ubatch at the running values (a one-token decode does not "
                           "use them); pp and ttft keep n_threads")
    tune.add_argument("--weights", metavar="pp=W,tg=W", help="weights of --objective mix (0.5 each)")
    tune.add_argument("--vram-budget", metavar="X", default=None, help="GPU memory budget: 90%% (default) or MiB")
    tune.add_argument("--rss-budget", metavar="X", default=None, help="host memory budget for CPU runs: %% or MiB")
    tune.add_argument("--ctx", type=int, metavar="N", help="the context requirement (fixed, not searched)")
    tune.add_argument("--strategy", choices=("gp", "rf", "et", "random"), default=None,
                      help="optimiser: Gaussian process (gp, default), random forest, extra trees, random search")
    tune.add_argument("--resume", metavar="STUDY", help="continue a stopped study (std:N or N)")
    tune.add_argument("--apply", action="store_true", help="apply a verified gain (not with --no-verify)")
    tune.add_argument("--no-verify", action="store_true", help="skip the A/B verification (nothing is applied)")
    tune.add_argument("--rounds", type=int, default=12, metavar="N",
                      help="the most A/B verification rounds (12; at least 4: it stops early once decided)")
    tune.add_argument("--min-gain", type=float, default=2.0, metavar="PCT",
                      help="the smallest gain worth a change, in %% (2)")
    tune.add_argument("--n-prompt", type=int, default=128, metavar="N", help="prompt tokens per bench rep (128)")
    tune.add_argument("--n-gen", type=int, default=32, metavar="N", help="generated tokens per bench rep (32)")
    tune.add_argument("--depth", type=int, default=0, metavar="N", help="KV depth before each rep (0)")
    tune.add_argument("--reps", type=int, default=3, metavar="N", help="bench repetitions per trial (3)")
    tune.add_argument("--study-seed", type=int, default=0, metavar="N", help="optimiser seed (0)")
    tune.add_argument("--no-warm-start", action="store_true", help="ignore earlier trials in the journal")
    tune.add_argument("--plateau-stop", action="store_true",
                      help="stop before the budget on a plateau (the expected improvement stays tiny and nothing "
                           "measured is likely to beat the kept best) and say how many trials that saved; off by "
                           "default: it still costs misses on seven of the nine recorded cases (README)")
    tune.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    tune.set_defaults(func=cmd_tune)


def _study_id(text: str | None) -> int | None:
    if text is None:
        return None
    raw = text.strip().lower().removeprefix("std:").removeprefix("study:")
    if not raw.isdigit():
        raise LlmosError(f"bad study id {text!r}: expected std:N or N")
    return int(raw)


def _build(config: "Config") -> "Operator":
    from llmos_tui.core.wiring import build_core

    return build_core(config, mode="oneshot", doctor=False)


def _fmt_config(config: dict[str, object]) -> str:
    short = {"n_gpu_layers": "ngl", "n_batch": "b", "n_ubatch": "ub", "n_threads": "t", "n_threads_batch": "tb",
             "flash_attn": "fa", "type_k": "k", "type_v": "v"}
    return " ".join(f"{short.get(k, k)}={v}" for k, v in config.items())


def _study_config(args: argparse.Namespace,
                  resume: int | None) -> "tuple[StudyConfig | None, dict[str, object]]":
    """Every option checked before any work starts (one ConfigError line each)."""
    from llmos_tui.tuning.measure import BenchSpec
    from llmos_tui.tuning.objective import parse_weights
    from llmos_tui.tuning.study_config import StudyConfig, check_budget

    if args.apply and args.no_verify:
        raise LlmosError("--apply needs the verification: with --no-verify nothing would be applied "
                         "(drop --no-verify, or --apply)")
    if args.trials is not None and args.trials < 1:
        raise LlmosError(f"--trials must be at least 1, got {args.trials}")
    for name, low in (("n_prompt", 0), ("n_gen", 1), ("reps", 1), ("rounds", 1), ("depth", 0)):
        if getattr(args, name) < low:
            raise LlmosError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.ctx is not None and args.ctx < 1:
        raise LlmosError(f"--ctx must be at least 1, got {args.ctx}")
    if not 0 <= args.min_gain < 100:
        raise LlmosError(f"--min-gain must be a percentage in [0, 100), got {args.min_gain}")
    for flag, value in (("--vram-budget", args.vram_budget), ("--rss-budget", args.rss_budget)):
        if value is not None:
            check_budget(value, flag)
    weights = parse_weights(args.weights) if args.weights else None
    spec = BenchSpec(n_prompt=args.n_prompt, n_gen=args.n_gen, depth=args.depth, reps=args.reps)
    options: dict[str, object] = dict(trials=args.trials, objective=args.objective, weights=weights,
                                   vram_budget=args.vram_budget, rss_budget=args.rss_budget, ctx=args.ctx,
                                   strategy=args.strategy, apply=args.apply, spec=spec, seed=args.study_seed,
                                   verify_rounds=args.rounds, min_gain=args.min_gain / 100,
                                   warm_start=not args.no_warm_start, verify=not args.no_verify,
                                   stop_on_plateau=True if args.plateau_stop else None)
    if resume is None:  # a new study: the defaults where nothing was given
        options.update(objective=args.objective or "tg", strategy=args.strategy or "gp",
                       vram_budget=args.vram_budget or "90%")
        return StudyConfig.from_options(**options), {}
    StudyConfig.from_options(**{**options, "trials": options["trials"] or 1})  # checked now, resolved at resume
    return None, {k: v for k, v in options.items() if v is not None}


@guarded
def cmd_tune(args: argparse.Namespace) -> int:
    from llmos_tui.cli.main import config_from_args

    config = config_from_args(args)
    resume = _study_id(args.resume)
    study_config, resume_options = _study_config(args, resume)
    out = sys.stderr if args.json else sys.stdout
    op = _build(config)
    try:
        for problem in op.problems:
            print(f"note: {problem}", file=out)
        print(f"starting the engine on {config.engine.model_path} ...", file=out, flush=True)
        op.start_engine()
        tuner = op.tuner
        tuner.subscribe(lambda ev: _progress(ev, out))
        if resume is None:
            call: dict[str, object] = {"config": study_config}
        else:  # the study's own settings, unless given again
            call = {"resume": resume, **resume_options}
        box: dict[str, object] = {}
        finished = threading.Event()  # not thread.is_alive(): a join interrupted by Ctrl+C can lie

        def run() -> None:
            try:
                box["report"] = tuner.run(**call)
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


def _progress(ev: dict[str, Any], out: TextIO) -> None:
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
    elif kind == "note":
        print(f"  {ev['text']}", file=out, flush=True)
    elif kind == "warmstart":
        print(f"  {ev['summary']}", file=out, flush=True)
    elif kind == "trial":
        t = ev["trial"]
        bar = _bar(ev["done"], ev["total"])
        result = f"{t['value']:.2f}" if t["value"] is not None else f"{t['outcome'].upper()} ({t['reason'][:90]})"
        best = ev.get("best")
        best_text = f"best {best['mean']:.2f} (n={best['n']})" if best else "best -"
        count = (f"{ev['done']:>3}/{ev['total']}" if ev["done"] <= ev["total"]
                 else f"+{ev['done'] - ev['total']:<2} over")  # a re-measure past the budget
        print(f"{bar} {count} [{t['origin'][:40]}] {_fmt_config(t['config'])} -> "
              f"{result}  {best_text}", file=out, flush=True)
    elif kind == "verify_round":
        a, b = ev.get("a"), ev.get("b")
        fa = f"{a:.2f}" if a is not None else "failed"
        fb = f"{b:.2f}" if b is not None else "failed"
        print(f"  verify round {ev['round']} (at most {ev['rounds']}, order {ev.get('order', 'AB')}): "
              f"running {fa}  candidate {fb}", file=out, flush=True)


def _bar(done: int, total: int, width: int = 12) -> str:
    filled = int(width * done / max(1, total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _final(report: "StudyReport", out: TextIO) -> None:
    obj = report.objective or {}
    unit = {"tg": "tok/s", "pp": "tok/s", "ttft": "ms"}.get(obj.get("name"), "tok/s")
    print("", file=out)
    failed = [t for t in report.trials if not t.ok]
    ran = [t for t in report.trials if t.ran]
    refused = len(report.trials) - len(ran)
    print(f"study std:{report.study_id}: {report.status}, {len(ran)} trials "
          f"({sum(not t.ok for t in ran)} failed" + (f"; {refused} more refused before loading" if refused else "")
          + f"), objective {obj.get('name')} in {unit}", file=out)
    if report.ranking:
        print(f"  {'#':>2} {'mean':>10} {'n':>3} {'spread':>7}  configuration", file=out)
        for i, row in enumerate(report.ranking, 1):
            spread = f"{row['spread'] * 100:.1f}%" if row.get("spread") is not None else "-"
            print(f"  {i:>2} {row['mean']:>10.2f} {row['n']:>3} {spread:>7}  {_fmt_config(row['config'])}", file=out)
    for t in failed[:8]:
        print(f"  failed #{t.index} {t.outcome}: {_fmt_config(t.config)}: {t.reason[:120]}", file=out)
    for note in report.notes:
        print(f"  note: {note}", file=out)
    if report.plateau:
        p = report.plateau
        print(f"  stopped on a plateau: {p['trials']} of {p['budget']} trials run, {p['saved']} saved", file=out)
    if report.verdict:
        v = report.verdict
        if v.get("estimate") is not None and v.get("ci_low") is not None:
            print(f"  speedup over the running configuration: {v['estimate']:.3f}x, {v['confidence']:.0%} CI "
                  f"[{v['ci_low']:.3f}, {v['ci_high']:.3f}], {v['rounds']} A/B rounds, p={v['p_value']:.4f} "
                  f"against a {v['min_gain']:.0%} gain -> {'verified' if v['significant'] else 'not verified'}",
                  file=out)
    if report.apply_outcome:
        print(f"  apply: {report.apply_outcome.get('state')}: {report.apply_outcome.get('message')}", file=out)
    print(report.message, file=out, flush=True)
