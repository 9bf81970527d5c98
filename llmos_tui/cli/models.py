"""`llmos-tui models`: GGUF files on this machine, read from their headers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path



def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    models = sub.add_parser("models", help="list GGUF files found where people keep them")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--dir", action="append", default=[], metavar="DIR", help="also search DIR")
    models.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from llmos_tui.engine.discovery import discover, search_roots
    from llmos_tui.engine.gguf_info import human_bytes

    roots = search_roots() + [("extra", Path(d).expanduser()) for d in args.dir]
    found = discover(roots)
    if args.json:
        print(json.dumps([
            {"path": str(f.path), "source": f.source, "label": f.label,
             "info": f.info.to_dict() if f.info else None, "error": f.error}
            for f in found
        ], indent=2))
        return 0
    if not found:
        print("no GGUF files found; searched: " + ", ".join(str(r) for _s, r in roots))
        return 0
    rows = [("MODEL", "SOURCE", "SIZE", "ARCH", "QUANT", "CTX", "PATH")]
    for f in found:
        if f.info:
            i = f.info
            rows.append((f.label, f.source, human_bytes(i.size_bytes), i.architecture, i.quantization,
                         str(i.context_length or "?"), str(f.path)))
        else:
            rows.append((f.label, f.source, "-", "-", "-", "-", f"{f.path}  ({f.error})"))
    from llmos_tui.textsafe import terminal_safe

    rows = [tuple(terminal_safe(c) for c in r) for r in rows]  # file names are anyone's: aligned as shown
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in range(len(widths))) + "  " + r[-1])
    return 0
