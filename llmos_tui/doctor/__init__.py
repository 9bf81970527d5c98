"""The doctor: detectors find trouble, repairs fix it, the policy decides which runs when.

Public API (plugins need only the first line):

- :func:`detector`, :func:`repair`, :class:`Finding`, :class:`NotApplicable` — the plugin API;
  :class:`DetectorContext`, :class:`RepairContext` — what they receive.
- :class:`Doctor` — the scheduler (``loop``: the doctor thread, event intake, detection
  passes); :class:`DoctorEvent` — what its subscribers get. It is composed of plain parts,
  each given its collaborators: :class:`FindingBook` (``book``: open, silenced, history,
  subscribers), :class:`RepairRunner` (``runner``: policy rails, backoff, start limit, the
  repair in flight, kill switch, repairs through the change transaction, verification),
  :class:`Canary` (``canary``: the liveness probe), :class:`Intake` (``intake``: what other
  threads hand in — engine events, replies, the operator's requests — and what each detector
  has read), and ``verify`` (the metric that raised a finding, measured again on a workload of
  its shape).
- :class:`Policy` — off / suggest / auto per detector or severity, and the guard rails; crash,
  crash loop, OOM and hang are ``auto`` out of the box (``BUILTIN_MODES``).
- :class:`PluginManager` — discovery, loading, isolation; :func:`run_canary`.
- Built-in detectors by family in ``detectors/`` (engine, gpu, performance, telemetry,
  conversation); built-in repairs in ``repairs.py``.

Nothing here imports Textual.
"""

from llmos_tui.doctor.api import (
    SEVERITIES,
    DetectorSpec,
    Finding,
    NotApplicable,
    RepairSpec,
    detector,
    repair,
    worst,
)
from llmos_tui.engine.probe import CanaryResult, run_canary
from llmos_tui.doctor.book import FindingBook
from llmos_tui.doctor.canary import Canary
from llmos_tui.doctor.context import DetectorContext, RepairContext
from llmos_tui.doctor.intake import Intake
from llmos_tui.doctor.loop import Doctor, DoctorEvent
from llmos_tui.doctor.runner import RepairRunner
from llmos_tui.doctor.plugins import PluginInfo, PluginManager
from llmos_tui.doctor.policy import MODES, Policy

EXIT_CODES = {None: 0, "info": 0, "warning": 1, "error": 2, "critical": 3}

__all__ = [
    "EXIT_CODES",
    "MODES",
    "SEVERITIES",
    "Canary",
    "CanaryResult",
    "DetectorContext",
    "DetectorSpec",
    "Doctor",
    "DoctorEvent",
    "Finding",
    "FindingBook",
    "Intake",
    "NotApplicable",
    "PluginInfo",
    "PluginManager",
    "Policy",
    "RepairContext",
    "RepairRunner",
    "RepairSpec",
    "detector",
    "repair",
    "run_canary",
    "worst",
]
