"""What a study says: its trials (``TrialRecord``) and its report (``StudyReport``), plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

JsonDict = dict[str, object]

# what became of an apply that was asked for; the exit code of `tune --apply` follows it
APPLY_FAILED = ("refused", "rolled_back", "failed")


@dataclass
class TrialRecord:
    index: int  # 1-based within the study (resumed trials keep their numbers)
    config: dict[str, object]
    outcome: str
    value: float | None
    reason: str = ""
    origin: str = "optimiser"  # optimiser | repeat | confirm | warm start: <where from> | resumed
    trial_id: int | None = None  # trl:N
    summary: str = ""
    wall_s: float = 0.0
    ran: bool = True  # False: refused before any load (the header, the memory estimate): no engine ran

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_dict(self) -> JsonDict:
        return {"index": self.index, "config": self.config, "outcome": self.outcome, "value": self.value,
                "reason": self.reason, "origin": self.origin, "trial_id": self.trial_id, "summary": self.summary,
                "wall_s": self.wall_s, "ran": self.ran}


@dataclass
class StudyReport:
    study_id: int | None
    status: str  # done | stopped | failed
    objective: JsonDict
    trials: list[TrialRecord] = field(default_factory=list)
    ranking: list[JsonDict] = field(default_factory=list)  # config, mean, n, spread
    best: JsonDict | None = None  # the candidate: the best mean after the confirmations
    running: JsonDict | None = None  # the configuration that ran before the study
    baseline: JsonDict | None = None  # the verification's A: the running configuration at the study's n_ctx
    verdict: JsonDict | None = None
    applied: JsonDict | None = None  # the change's result, when a change was proposed
    apply_asked: bool = False
    apply_outcome: JsonDict | None = None  # whenever an apply was asked: what became of it (journaled)
    warm_start: str = ""
    notes: list[str] = field(default_factory=list)  # what the study adapted (a budget doubled, ...)
    message: str = ""
    error: str = ""
    # the study stopped on a plateau: {"reason", "trials" run, "budget", "saved" = budget - trials}
    plateau: JsonDict | None = None

    @property
    def exit_code(self) -> int:
        if self.status == "stopped":
            return 130
        if self.status == "failed" or self.best is None:
            return 1
        if self.apply_asked and (self.apply_outcome is None or self.apply_outcome.get("state") in APPLY_FAILED):
            return 1
        return 0

    def to_dict(self) -> JsonDict:
        return {"study_id": self.study_id, "study": f"std:{self.study_id}" if self.study_id else None,
                "status": self.status, "objective": self.objective,
                "trials": [t.to_dict() for t in self.trials], "ranking": self.ranking, "best": self.best,
                "running": self.running, "baseline": self.baseline, "verdict": self.verdict, "applied": self.applied,
                "apply_outcome": self.apply_outcome,
                "warm_start": self.warm_start, "notes": list(self.notes), "message": self.message,
                "error": self.error, "plateau": self.plateau, "exit_code": self.exit_code}


__all__ = ["TrialRecord", "StudyReport", "APPLY_FAILED"]
