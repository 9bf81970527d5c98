"""`llmos-tui quantize` and `llmos-tui compare`: make smaller models and measure what they trade.

    llmos-tui quantize --model IN.gguf --to q8_0 [--out FILE] [--evaluate]
    llmos-tui compare --model SOURCE.gguf VARIANT.gguf ... [--max-kld 0.05 [--apply]] [--plot] [--kv]

Exit codes: 0 done, 1 refused or failed (one line on stderr), 2 bad usage (a missing argument or
a bad option value: one line, before any work starts). `quantize` exits 1 when the file was made
but could not be journaled (it says so); `compare` with a budget that nothing fits exits 1 and
says so; `compare --apply` exits 0 only when the pick is what the journal's active version runs
(applied, or already running), and prints that version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmos_tui.cli.checks import BadOption, bad_usage, integer, number, readable_file
from llmos_tui.cli.support import error, guarded

if TYPE_CHECKING:
    from llmos_tui.compress.variants import ChangeOutcome, Variant
    from llmos_tui.config import Config
    from llmos_tui.journal import Journal

EVAL_CTX_MIN = 16  # fewer tokens per chunk scores nothing worth a number


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    q = subparsers.add_parser("quantize", help="quantise a GGUF model with llama.cpp's quantizer (journaled)",
                              description="Quantise a GGUF model (in a child process), refusing to overwrite and "
                                          "checking free disk first; the new file is journaled with its parent.")
    q.add_argument("--model", "-m", metavar="IN.gguf", default=argparse.SUPPRESS, help="the source model")
    q.add_argument("--to", required=True, metavar="TYPE", help="q8_0, q6_k, q5_k_m, q4_k_m, q4_0, ...")
    q.add_argument("--out", metavar="FILE", help="output file (default: next to the source, named by type)")
    q.add_argument("--threads", default="0", metavar="N", help="quantizer threads (0: all cores)")
    q.add_argument("--allow-requantize", action="store_true", help="quantise an already quantised model")
    q.add_argument("--evaluate", action="store_true", help="then measure it against the source (as `compare`)")
    q.add_argument("--no-journal", action="store_true", help="do not journal the new file")
    q.add_argument("--journal", metavar="PATH", default=argparse.SUPPRESS, help="journal SQLite file")
    q.add_argument("--json", action="store_true", help="machine-readable result")
    q.set_defaults(func=_cmd_quantize)

    c = subparsers.add_parser("compare", help="size, speed and quality (perplexity, KLD) of model variants",
                              description="Measure the source and each variant on this box: size, load time, "
                                          "prompt/generation tok/s, perplexity on the shipped held-out text and "
                                          "KL divergence against the source.")
    c.add_argument("--model", "-m", metavar="SOURCE.gguf", default=argparse.SUPPRESS, help="the source model")
    c.add_argument("variants", nargs="*", metavar="VARIANT.gguf",
                   help="variants to compare (default: the journal's quantisations of the source)")
    c.add_argument("--text", metavar="FILE", help="held-out text (default: the one the package ships)")
    c.add_argument("--eval-ctx", dest="eval_ctx", default="256", metavar="N",
                   help=f"tokens per scored chunk (default 256, at least {EVAL_CTX_MIN})")
    c.add_argument("--chunks", default="16", metavar="N", help="at most N chunks of the text (default 16)")
    c.add_argument("--no-speed", action="store_true", help="quality and size only (no bench)")
    c.add_argument("--max-kld", metavar="X", help="budget: the fastest variant with mean KLD <= X")
    c.add_argument("--max-ppl-ratio", metavar="R", help="budget: perplexity at most R x the source")
    c.add_argument("--apply", action="store_true",
                   help="switch the engine to the pick (change transaction; needs --max-kld or --max-ppl-ratio)")
    c.add_argument("--plot", action="store_true", help="draw size / speed / quality")
    c.add_argument("--kv", action="store_true", help="also the KV-cache quantisation cost (q8_0, q4_0 vs f16)")
    c.add_argument("--journal", metavar="PATH", default=argparse.SUPPRESS, help="journal SQLite file")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=_cmd_compare)


def _config(args: argparse.Namespace) -> "Config":
    from llmos_tui.cli.main import config_from_args

    return config_from_args(args)


def _open_journal(config: "Config") -> "Journal":
    from llmos_tui.journal import Journal

    return Journal(config.journal_file)


def _source(args: argparse.Namespace, config: "Config") -> str:
    """The source model: --model, else the config's; it must be a readable file."""
    given = getattr(args, "model", None)
    path = readable_file(given or config.engine.model_path, "--model" if given else "the configured model")
    return str(path)


def _check_quantize(args: argparse.Namespace) -> None:
    """Every value-taking option of `quantize`, before any work (raises BadOption)."""
    from llmos_tui.compress.quantize import QuantizeError, normalise_qtype

    readable_file(getattr(args, "model", None), "--model")
    try:
        args.to = normalise_qtype(args.to)
    except QuantizeError as exc:
        raise BadOption(f"--to: {exc}") from None
    args.threads = integer(args.threads, "--threads", minimum=0)
    # --out (exists, folder missing, the source itself) is refused by quantize() before it starts:
    # a refusal, exit 1, as for a full disk.


def _check_compare(args: argparse.Namespace) -> None:
    """Every value-taking option of `compare`, before any measurement (raises BadOption)."""
    readable_file(getattr(args, "model", None), "--model")
    for variant in args.variants:
        readable_file(variant, "VARIANT.gguf")
    readable_file(args.text, "--text")
    args.eval_ctx = integer(args.eval_ctx, "--eval-ctx", minimum=EVAL_CTX_MIN)
    args.chunks = integer(args.chunks, "--chunks", minimum=1)
    args.max_kld = number(args.max_kld, "--max-kld", minimum=0.0)
    args.max_ppl_ratio = number(args.max_ppl_ratio, "--max-ppl-ratio", minimum=0.0, above=True)
    if args.apply and args.max_kld is None and args.max_ppl_ratio is None:
        raise BadOption("--apply needs a budget to pick the variant it applies: give --max-kld X or --max-ppl-ratio R")


class _Bar:
    """A one-line progress bar on stderr (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = -1

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled or total <= 0:
            return
        pct = int(100 * done / total)
        if pct == self.last:
            return
        self.last = pct
        filled = pct * 30 // 100
        label = name if name != "bytes" else "writing"
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {pct:3d}% {label[:36]:<36}")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled and self.last >= 0:
            sys.stderr.write("\n")


@guarded
def _cmd_quantize(args: argparse.Namespace) -> int:
    from llmos_tui.compress.quantize import journal_result, quantize
    from llmos_tui.engine.gguf_info import human_bytes

    try:
        _check_quantize(args)
        config = _config(args)
        source = _source(args, config)
    except BadOption as problem:
        return bad_usage("quantize", problem)
    bar = _Bar(sys.stderr.isatty() and not args.json)
    try:
        result = quantize(source, args.to, args.out, nthread=args.threads, allow_requantize=args.allow_requantize,
                          progress=bar)
    finally:
        bar.end()
    journaled, journal_failed = "", False
    if not args.no_journal:
        try:
            journal = _open_journal(config)
            try:
                model_id = journal_result(journal, result)
            finally:
                journal.close()
            journaled = f"journaled as mdl:{model_id}"
        except Exception as exc:  # noqa: BLE001 - the file is made; say the journal did not take it
            journaled, journal_failed = f"NOT journaled ({exc})", True
    if args.json:
        print(json.dumps({**result.to_dict(), "journal": journaled}, indent=2))
    else:
        print(f"{result.output}: {result.qtype}, {human_bytes(result.size_bytes)} "
              f"(source {human_bytes(result.source_bytes)}, {result.size_bytes / result.source_bytes:.0%}), "
              f"{result.n_tensors} tensors in {result.seconds:.1f} s; {journaled or 'not journaled (--no-journal)'}")
    code = 1 if journal_failed else 0  # the exit code says what the last words said
    if args.evaluate:
        ns = argparse.Namespace(**{**vars(args), "model": result.source, "variants": [result.output], "text": None,
                                   "eval_ctx": 256, "chunks": 16, "no_speed": False, "max_kld": None,
                                   "max_ppl_ratio": None, "apply": False, "plot": False, "kv": False})
        code = max(code, _compare(ns, config))
        if journal_failed:
            print(f"llmos-tui: error: {result.output} was made but {journaled}", file=sys.stderr)
    elif journal_failed:
        print(f"llmos-tui: error: {result.output} was made but {journaled}", file=sys.stderr)
    return code


@guarded
def _cmd_compare(args: argparse.Namespace) -> int:
    try:
        _check_compare(args)
        config = _config(args)
        _source(args, config)
    except BadOption as problem:
        return bad_usage("compare", problem)
    return _compare(args, config)


def _compare(args: argparse.Namespace, config: "Config") -> int:
    from llmos_tui.compress import variants as V

    source = getattr(args, "model", None) or config.engine.model_path
    paths = list(args.variants)
    journal = None
    try:
        journal = _open_journal(config)
    except Exception as exc:  # noqa: BLE001 - measuring works without a journal
        print(f"llmos-tui: note: journal not open ({exc}); results are not kept", file=sys.stderr)
    if not paths and journal is not None:
        paths = [m.path for m in journal.model_files(50, parent_path=source) if Path(m.path).exists()]
    if not paths:
        if journal is not None:
            journal.close()
        return error(f"no variants of {source} given or journaled (make one with `llmos-tui quantize --to q8_0`)")
    text = Path(args.text).read_text(encoding="utf-8") if args.text else None
    live = sys.stdout.isatty() and not args.json

    def row_done(v: "Variant") -> None:
        if live:
            print(f"measured {v.label}: {'error: ' + v.error if v.error else 'ok'}", file=sys.stderr)

    rows = V.measure_variants(source, paths, base=config.engine, text=text, n_ctx=args.eval_ctx,
                              max_chunks=args.chunks, speed=not args.no_speed, on_row=row_done)
    if journal is not None:
        for v in rows:
            record = journal.model_file(v.path)
            if record is not None:
                journal.set_model_metrics(record.id, {k: val for k, val in v.to_dict().items()
                                                      if k not in ("path", "extra")})
    kv_rows = V.kv_cache_quality(source, text=text, n_ctx=args.eval_ctx, max_chunks=args.chunks,
                                 n_threads=config.engine.n_threads) if args.kv else None
    choice, why = (None, "")
    budget = args.max_kld is not None or args.max_ppl_ratio is not None
    if budget:
        choice, why = V.pick(rows, max_kld=args.max_kld, max_ppl_ratio=args.max_ppl_ratio)
    applied: dict[str, object] | None = None
    holds: dict[str, object] | None = None  # what the journal's active version is after the apply
    if args.apply and choice is not None:
        applied = _apply(config, choice, why)
        holds = _journal_holds(journal)
    if journal is not None:
        journal.close()
    if args.json:
        print(json.dumps({"variants": [r.to_dict() for r in rows], "kv_cache": kv_rows,
                          "pick": choice.to_dict() if choice else None, "why": why,
                          "applied": applied, "journal_active": holds}, indent=2, default=str))
    else:
        print(V.table(rows))
        if kv_rows:
            print("\nKV cache (flash attention on; KLD against the f16 cache)")
            for r in kv_rows:
                val = "-" if r.get("kld") is None else f"{r['kld']:.5f}"
                ppl = "-" if r.get("perplexity") is None else f"{r['perplexity']:.4g}"
                print(f"  {r['cache']:<5} PPL {ppl:<10} KLD {val:<9} {r.get('reason') or ''}")
        if args.plot:
            print(V.plot(rows, color=sys.stdout.isatty()))
        if budget:
            print(why)
        if applied is not None:
            print(f"apply: {applied['state']}: {applied['message']}")
            print(_holds_line(holds))
    failed = [v for v in rows if v.error]
    if failed:  # a row of dashes is not a measurement: the exit code says so, as the table does
        print(f"llmos-tui: error: {len(failed)} of {len(rows)} variants not measured: "
              + "; ".join(f"{Path(v.path).name}: {v.error}" for v in failed), file=sys.stderr)
    if budget and choice is None:
        return 1
    if applied is not None and choice is not None:
        runs_pick = holds is not None and holds.get("model_path") == str(Path(choice.path).resolve())
        return 0 if applied.get("ok") and runs_pick and not failed else 1
    return 1 if failed else 0


def _apply(config: "Config", choice: "Variant", why: str) -> dict[str, object]:
    """Switch to the pick through the change transaction of a one-shot core (the same path as
    ``Operator.apply``, journaled as a ``model_switch``); what it came to, as a dict."""
    from llmos_tui.compress.variants import apply_variant
    from llmos_tui.core.wiring import build_core

    op = build_core(config, "oneshot", telemetry=False, doctor=False)
    try:
        outcome: ChangeOutcome = apply_variant(op, choice, reason=why)
        return outcome.to_dict()
    finally:
        op.close()


def _journal_holds(journal: "Journal | None") -> dict[str, object] | None:
    """The journal's active version, as the next start reads it (None without a journal)."""
    if journal is None:
        return None
    active = journal.active_config()
    if active is None:
        return None
    return {"id": active.entry_id, "model_path": str(Path(active.model_path).resolve()) if active.model_path else "",
            "standing": active.standing, "source": active.source}


def _holds_line(holds: dict[str, object] | None) -> str:
    if holds is None:
        return "journal: no active configuration (the apply was not journaled)"
    return (f"journal: active {holds['id']} ({holds['standing']}, by {holds['source']}): "
            f"{Path(str(holds['model_path'])).name}")
