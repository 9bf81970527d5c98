"""The built-in detectors (kept as the module the plugin loader imports; the detectors live in
``llmos_tui.doctor.detectors``, one module per family). The names stay importable from here."""

from llmos_tui.doctor.detectors import conversation, engine, gpu, performance, telemetry  # noqa: F401 - registers
from llmos_tui.doctor.detectors.common import MIB, _gpus, _held  # noqa: F401
from llmos_tui.doctor.detectors.conversation import context_overflow, repetition, reply_repetition  # noqa: F401
from llmos_tui.doctor.detectors.engine import (  # noqa: F401
    OOM_PATTERNS, canary, crash_loop, engine_crashed, engine_oom, oom_lines)
from llmos_tui.doctor.detectors.gpu import (  # noqa: F401
    THERMAL_BITS, XID_APP, XID_CRITICAL, XID_FAILURES, power_cap, thermal, vram_pressure, xid_ecc)
from llmos_tui.doctor.detectors.performance import memory_growth, tps_drop, ttft_spike, tuning_drift  # noqa: F401
from llmos_tui.doctor.detectors.telemetry import ANOMALY_FEATURES, anomaly  # noqa: F401
