"""Change one engine parameter through the change transaction, then undo it.

    python examples/change_and_undo.py [--set n_ctx=1024]

Both steps are vetted, journaled, reloaded and verified by the core; the journal entries
they made are printed. Uses only the public API.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse  # noqa: E402

from llmos_tui.core import build_core  # noqa: E402


def main() -> int:
    args, config = parse(__doc__.splitlines()[0],
                         set={"default": "n_ctx=1024", "metavar": "KEY=VALUE", "help": "the change (n_ctx=1024)"})
    key, _, value = args.set.partition("=")
    with build_core(config, mode="oneshot") as op:
        op.start_engine()
        print(f"running   {op.supervisor.params.summary()}")
        change = op.apply({key: value}, reason=f"example: {args.set}")
        print(f"apply     {change.state}: {change.message}")
        if not change.ok or change.state == "unchanged":
            return 1 if not change.ok else 0
        undo = op.undo(f"cfg:{change.config_id}")
        print(f"undo      {undo.state}: {undo.message}")
        print(f"running   {op.supervisor.params.summary()}")
        return 0 if undo.ok else 1


if __name__ == "__main__":
    sys.exit(main())
