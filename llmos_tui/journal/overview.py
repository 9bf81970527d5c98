"""What the journal holds, counted: the read model the exporter (and any face that wants totals)
uses instead of its own SQL. ``Overview`` (``journal.overview``) is given the connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from llmos_tui.journal.db import Database
from llmos_tui.journal.records import Json, _loads


@dataclass(frozen=True)
class StudyBest:
    """A study's best successful trial (by its objective's direction)."""

    study_id: int
    name: str
    objective: str
    value: float
    params: dict[str, Json] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"std:{self.study_id}" + (f" {self.name}" if self.name else "")


@dataclass(frozen=True)
class JournalCounts:
    actions: dict[str, int]  # by state
    findings: dict[str, int]  # by severity
    trials: dict[str, int]  # by outcome
    crashes: int  # engine crashes journaled
    active_config: int | None  # cfg:N of the active version
    studies: list[StudyBest]


class Overview:
    """Totals over the journal, read in one go under the connection's lock."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _grouped(self, sql: str) -> dict[str, int]:
        return {str(row["k"]): int(row["n"]) for row in self.db.query(sql)}

    def counts(self, maximize: Callable[[str], bool] = lambda objective: True) -> JournalCounts:
        """Everything at once; ``maximize(objective)`` says which way a study's objective is better."""
        active = self.db.one("SELECT id FROM configs WHERE active = 1")
        crashes = self.db.one("SELECT COUNT(*) AS n FROM events WHERE kind = 'crashed'")
        studies = []
        for study in self.db.query("SELECT id, name, objective FROM studies ORDER BY id"):
            objective = str(study["objective"] or "")
            order = "DESC" if maximize(objective) else "ASC"
            best = self.db.one(
                f"SELECT value, params FROM trials WHERE study_id = ? AND outcome = 'ok' AND value IS NOT NULL "
                f"ORDER BY value {order}, id LIMIT 1", (study["id"],))
            if best is None:
                continue
            params = _loads(best["params"])
            studies.append(StudyBest(int(study["id"]), str(study["name"] or ""), objective, float(best["value"]),
                                     params if isinstance(params, dict) else {}))
        return JournalCounts(
            actions=self._grouped("SELECT state AS k, COUNT(*) AS n FROM actions GROUP BY state"),
            findings=self._grouped("SELECT severity AS k, COUNT(*) AS n FROM findings GROUP BY severity"),
            trials=self._grouped("SELECT outcome AS k, COUNT(*) AS n FROM trials GROUP BY outcome"),
            crashes=int(crashes["n"]) if crashes else 0,
            active_config=int(active["id"]) if active else None,
            studies=studies,
        )
