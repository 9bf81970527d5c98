"""Telemetry rollups, the flight recorder: each series' mean per 10 s and per minute, kept for
48 hours and 30 days (configurable), with an upper bound on the rows each resolution keeps so the
file's size stays bounded whatever the sampling rate.

``RollupRecorder`` folds values (a mapping of series name -> number, as the sampler's samples
flatten to) into buckets and hands each finished bucket to a writer; ``Rollups`` is the
repository: it records, prunes and reads a series back for a span at the finest resolution kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from llmos_tui.journal.db import Database
from llmos_tui.journal.records import _loads

if TYPE_CHECKING:  # pragma: no cover
    from llmos_tui.journal.writer import JournalWriter

# resolution (s) -> (kept seconds, at most rows)
DEFAULT_KEEP: dict[int, tuple[float, int]] = {10: (48 * 3600.0, 48 * 360 + 60), 60: (30 * 86400.0, 30 * 1440 + 60)}
PRUNE_EVERY_S = 600.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class RollupRetention:
    """How long each resolution is kept (``[rollups]`` in the config) and the bound on the journal
    file's size: past it the oldest rollups are pruned first, whatever their age."""

    keep_10s_s: float = 48 * 3600.0
    keep_1min_s: float = 30 * 86400.0
    max_bytes: float = DEFAULT_MAX_BYTES

    def keep(self) -> dict[int, tuple[float, int]]:
        """resolution -> (kept seconds, at most rows): the row bound follows from the age."""
        return {10: (self.keep_10s_s, int(self.keep_10s_s / 10) + 60),
                60: (self.keep_1min_s, int(self.keep_1min_s / 60) + 60)}


class Rollups:
    def __init__(self, db: Database, keep: Mapping[int, tuple[float, int]] | None = None,
                 max_bytes: float | None = DEFAULT_MAX_BYTES) -> None:
        self.db = db
        self.keep = dict(keep or DEFAULT_KEEP)
        self.max_bytes = max_bytes
        self._last_prune = 0.0

    def configure(self, retention: RollupRetention) -> None:
        """Take the config's retention (the composition root calls this on the writer's thread)."""
        self.keep = retention.keep()
        self.max_bytes = retention.max_bytes
        self.prune()

    def record(self, res: int, ts: float, values: Mapping[str, float]) -> int:
        from llmos_tui.journal.records import _dumps

        with self.db.write("record a rollup") as conn:
            row_id = conn.execute("INSERT INTO rollups (ts, res, data) VALUES (?, ?, ?)",
                                  (ts, int(res), _dumps(dict(values)))).lastrowid
        if time.time() - self._last_prune > PRUNE_EVERY_S:
            self.prune()
        return int(row_id or 0)

    def prune(self, now: float | None = None) -> int:
        """Drop rows past each resolution's age, then the oldest past its row bound, then (while
        the journal's pages in use exceed ``max_bytes``) the oldest rollups of any resolution."""
        now = time.time() if now is None else now
        self._last_prune = time.time()
        removed = 0
        with self.db.write("prune rollups") as conn:
            for res, (age_s, max_rows) in self.keep.items():
                removed += conn.execute("DELETE FROM rollups WHERE res = ? AND ts < ?", (res, now - age_s)).rowcount
                removed += conn.execute(
                    "DELETE FROM rollups WHERE res = ? AND id NOT IN "
                    "(SELECT id FROM rollups WHERE res = ? ORDER BY ts DESC LIMIT ?)", (res, res, max_rows)).rowcount
        return removed + self._prune_to_size()

    def used_bytes(self) -> int:
        """The journal's pages in use (freed pages are reused before the file grows, so this is
        what the bound holds down; the file itself shrinks only on VACUUM)."""
        def pragma(name: str) -> int:
            row = self.db.one(f"PRAGMA {name}")
            return int(next(iter(row.values()))) if row else 0

        return (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")

    def _prune_to_size(self) -> int:
        if not self.max_bytes:
            return 0
        removed = 0
        while self.used_bytes() > self.max_bytes:
            total = sum(self.count(res) for res in self.keep)
            if not total:
                break  # the rest of the journal is not the flight recorder's to drop
            batch = max(100, total // 10)
            with self.db.write("prune rollups to the size bound") as conn:
                removed += conn.execute("DELETE FROM rollups WHERE id IN "
                                        "(SELECT id FROM rollups ORDER BY ts LIMIT ?)", (batch,)).rowcount
        return removed

    def count(self, res: int) -> int:
        row = self.db.one("SELECT COUNT(*) AS n FROM rollups WHERE res = ?", (res,))
        return int(row["n"]) if row else 0

    def _resolution(self, since: float, res: int | None) -> int:
        """The finest resolution whose rows reach back to ``since`` (``res`` when given)."""
        choices = [res] if res is not None else sorted(self.keep)
        oldest: dict[int, float] = {}
        for r in choices:
            row = self.db.one("SELECT MIN(ts) AS ts FROM rollups WHERE res = ?", (r,))
            oldest[r] = float(row["ts"]) if row and row["ts"] is not None else float("inf")
        reaching = [r for r in choices if oldest[r] <= since]
        # the finest that reaches back to since; else the finest that reaches within one coarsest
        # bucket of the furthest (a young journal: every resolution starts at about the same time)
        furthest = min(oldest.values())
        return reaching[0] if reaching else next(r for r in choices if oldest[r] <= furthest + max(choices))

    def span(self, since: float, until: float | None = None,
             res: int | None = None) -> tuple[int, list[tuple[float, dict[str, float]]]]:
        """(resolution, [(ts, {series: mean})]) in the span, at the finest resolution that reaches
        back to ``since``: every series of a row read at once (the journal screen's recorder)."""
        until = time.time() if until is None else until
        chosen = self._resolution(since, res)
        out = []
        for row in self.db.query("SELECT ts, data FROM rollups WHERE res = ? AND ts >= ? AND ts < ? ORDER BY ts",
                                 (chosen, since, until)):
            data = _loads(row["data"])
            if isinstance(data, dict):
                out.append((float(row["ts"]), {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}))
        return chosen, out

    def series(self, name: str, since: float, until: float | None = None,
               res: int | None = None) -> tuple[int, list[tuple[float, float]]]:
        """(resolution, [(ts, mean)]) of ``name`` in the span: the finest resolution whose rows
        reach back to ``since`` (or ``res`` when given)."""
        chosen, rows = self.span(since, until, res)
        return chosen, [(ts, values[name]) for ts, values in rows if name in values]

    def newest_ts(self) -> float | None:
        row = self.db.one("SELECT MAX(ts) AS ts FROM rollups")
        return float(row["ts"]) if row and row["ts"] is not None else None


class RollupRecorder:
    """Folds values into per-resolution buckets; a finished bucket's means go to ``write(res, ts,
    means)`` (a journal writer's submit, so the sampler's thread never waits on the disk)."""

    def __init__(self, write: Callable[[int, float, dict[str, float]], object],
                 resolutions: tuple[int, ...] = tuple(DEFAULT_KEEP)) -> None:
        self.write = write
        self._buckets: dict[int, tuple[int, dict[str, float], dict[str, int]]] = {}
        self.resolutions = resolutions

    def add(self, ts: float, values: Mapping[str, float | None]) -> None:
        for res in self.resolutions:
            slot = int(ts // res)
            current = self._buckets.get(res)
            if current is not None and current[0] != slot:
                self._flush(res, current)
                current = None
            if current is None:
                current = (slot, {}, {})
                self._buckets[res] = current
            _, sums, counts = current
            for name, value in values.items():
                if name == "ts" or value is None or value != value:
                    continue
                sums[name] = sums.get(name, 0.0) + float(value)
                counts[name] = counts.get(name, 0) + 1

    def _flush(self, res: int, bucket: tuple[int, dict[str, float], dict[str, int]]) -> None:
        slot, sums, counts = bucket
        if sums:
            self.write(res, float(slot * res), {n: sums[n] / counts[n] for n in sums})

    def close(self) -> None:
        for res, bucket in list(self._buckets.items()):
            self._flush(res, bucket)
        self._buckets.clear()


def recorder_for(writer: "JournalWriter") -> RollupRecorder:
    """A recorder whose finished buckets are written on the journal writer's thread; a closed or
    failing writer loses the bucket, never the caller's thread."""
    from llmos_tui.errors import JournalError

    def write(res: int, ts: float, means: dict[str, float]) -> None:
        try:
            writer.submit(lambda j: j.rollups.record(res, ts, means))
        except JournalError:
            pass

    return RollupRecorder(write)
