"""Run a set of prompts through the engine and print llama.cpp's own tokens/s for each.

    python examples/prompt_set_tps.py [--prompts FILE] [--max-tokens 64]

FILE holds one prompt per line (default: a built-in set). Each prompt starts a fresh
conversation, so the prompts are measured alike. Uses only the public API.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse  # noqa: E402

from llmos_tui.core import build_core  # noqa: E402

PROMPTS = ["What is VRAM?", "What is the KV cache?", "Why does a GPU throttle?", "What is quantisation?"]


def main() -> int:
    args, config = parse(__doc__.splitlines()[0],
                         prompts={"help": "file with one prompt per line"},
                         max_tokens={"type": int, "default": 64, "help": "reply length limit (64)"})
    prompts = PROMPTS if not args.prompts else [
        line.strip() for line in Path(args.prompts).read_text(encoding="utf-8").splitlines() if line.strip()]
    rates: list[float] = []
    failures = 0
    with build_core(config, mode="oneshot") as op:
        op.start_engine()
        print(f"{'prompt':<40} {'prompt tok':>10} {'gen tok':>8} {'pp tok/s':>9} {'tg tok/s':>9} {'TTFT ms':>8}")
        for prompt in prompts:
            op.chat.reset()
            reply = op.send(prompt, max_tokens=args.max_tokens).wait(300)
            m = reply.metrics
            if reply.status != "done" or not m.get("gen_tps"):
                failures += 1
                print(f"{prompt[:40]:<40} {reply.status}: {reply.error or 'no tokens generated'}")
                continue
            rates.append(m["gen_tps"])
            print(f"{prompt[:40]:<40} {m['prompt_tokens']:>10} {m['gen_tokens']:>8} "
                  f"{m['prompt_tps'] or 0:>9.1f} {m['gen_tps']:>9.1f} {m['ttft_ms'] or 0:>8.1f}")
    if rates:
        print(f"median generation {statistics.median(rates):.1f} tok/s over {len(rates)} prompt(s); "
              f"{failures} failed")
    return 1 if failures or not rates else 0


if __name__ == "__main__":
    sys.exit(main())
