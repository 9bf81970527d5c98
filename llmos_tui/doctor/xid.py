"""XID and ECC/row-remap ladders: what each driver-reported GPU error asks of whom, as data.

Each ladder is the sequence of actions to take, smallest first, transcribed from NVIDIA's
published guidance: the Xid catalog's resolution buckets (immediate action: RESTART_APP,
RESET_GPU, RESTART_BM, CONTACT_SUPPORT, IGNORE; investigatory action) and the Health
Validation / DCGM checks' recommended action ladders (drain: reset_gpu -> service_required).
https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html and
https://docs.nvidia.com/health-validation/reference/checks/xid.html. Check the catalog for
your GPU and driver before acting on an XID that is not listed here.

The doctor does only the steps that are safe on a box it does not own: restart its own
engine (the ``engine.restart`` repair) and tell. Every other step is a recommendation, shown
with the finding; it never resets a GPU, drains, reboots or calls anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

# step -> (who does it, the words shown)
STEPS: dict[str, tuple[str, str]] = {
    "watch": ("operator", "watch: nothing to do unless it repeats"),
    "restart_engine": ("doctor", "restart the engine (the doctor does this)"),
    "stop_work": ("operator", "stop sending work to this GPU"),
    "reset_gpu": ("operator", "reset the GPU (nvidia-smi -r -i N, root, no process on it)"),
    "drain": ("operator", "drain the box: move its work elsewhere"),
    "reboot": ("operator", "reboot the box (a GPU reset cannot reach it)"),
    "check_hw": ("operator", "check the mechanicals: seating, cables, power, cooling"),
    "service": ("operator", "call service: NVIDIA or the vendor, with nvidia-bug-report.sh"),
}
DOCTOR_STEPS = frozenset(step for step, (who, _) in STEPS.items() if who == "doctor")


@dataclass(frozen=True)
class Ladder:
    """What an XID (or an ECC/remap state) means and its steps, smallest first."""

    key: str  # "xid 79", "ecc uncorrected", "remap pending", "remap failure"
    meaning: str
    severity: str  # the finding's severity
    steps: tuple[str, ...]
    bucket: str  # NVIDIA's immediate-action bucket as the catalog names it

    @property
    def doctor_acts(self) -> bool:
        """The first step is one the doctor may take itself (restart its engine)."""
        return bool(self.steps) and self.steps[0] in DOCTOR_STEPS

    def lines(self) -> list[str]:
        return [f"{i}. {STEPS[s][1]}" for i, s in enumerate(self.steps, 1)]

    def short(self) -> str:
        return " -> ".join(s.replace("_", " ") for s in self.steps)


def _x(xid: int, meaning: str, severity: str, bucket: str, *steps: str) -> tuple[int, Ladder]:
    return xid, Ladder(f"xid {xid}", meaning, severity, steps, bucket)


XID_LADDERS: dict[int, Ladder] = dict([
    _x(8, "GPU stopped processing (channel idle timeout)", "warning", "RESTART_APP",
       "restart_engine", "reset_gpu", "service"),
    _x(13, "graphics engine exception", "warning", "RESTART_APP", "restart_engine", "reset_gpu", "service"),
    _x(31, "GPU memory page fault", "warning", "RESTART_APP", "restart_engine", "reset_gpu", "service"),
    _x(43, "GPU stopped processing", "warning", "RESTART_APP", "restart_engine", "reset_gpu", "service"),
    _x(45, "preemptive cleanup after an earlier error", "warning", "IGNORE", "watch", "restart_engine"),
    _x(46, "GPU stopped processing", "critical", "RESET_GPU", "stop_work", "drain", "reset_gpu", "service"),
    _x(48, "double-bit ECC error", "critical", "RESET_GPU", "stop_work", "drain", "reset_gpu", "service"),
    _x(61, "internal micro-controller breakpoint", "error", "RESET_GPU", "drain", "reset_gpu", "service"),
    _x(62, "internal micro-controller halt", "error", "RESET_GPU", "drain", "reset_gpu", "service"),
    _x(63, "ECC page retirement or row remapping recorded", "warning", "RESET_GPU",
       "watch", "reset_gpu"),
    _x(64, "ECC page retirement or row-remap failure", "error", "RESET_GPU",
       "drain", "reset_gpu", "service"),
    _x(74, "NVLink error", "critical", "RESET_GPU", "drain", "reset_gpu", "check_hw", "service"),
    _x(79, "GPU has fallen off the bus", "critical", "RESTART_BM", "stop_work", "drain", "reboot", "check_hw",
       "service"),
    _x(92, "high single-bit ECC error rate", "error", "CONTACT_SUPPORT", "watch", "drain", "service"),
    _x(94, "contained ECC error", "error", "RESTART_APP", "restart_engine", "drain", "reset_gpu"),
    _x(95, "uncontained ECC error", "critical", "RESET_GPU", "stop_work", "drain", "reset_gpu", "service"),
    _x(119, "GSP RPC timeout", "error", "RESET_GPU", "drain", "reset_gpu", "reboot", "service"),
    _x(120, "GSP error", "error", "RESET_GPU", "drain", "reset_gpu", "reboot", "service"),
])

# what is not in the table: an application-level error of unknown meaning
UNKNOWN_XID = ("driver-reported error (not in the doctor's table: look it up in NVIDIA's Xid catalog)",
               "warning", "UNKNOWN", ("restart_engine", "reset_gpu", "service"))

ECC_LADDERS: dict[str, Ladder] = {
    "ecc uncorrected": Ladder("ecc uncorrected", "uncorrectable ECC errors since the driver loaded", "error",
                              ("restart_engine", "drain", "reset_gpu"), "RESET_GPU"),
    "remap pending": Ladder("remap pending", "a row remap waits for a GPU reset", "warning",
                            ("watch", "drain", "reset_gpu"), "RESET_GPU"),
    "remap failure": Ladder("remap failure", "row remapping failed: the memory cannot be repaired in place",
                            "critical", ("stop_work", "drain", "service"), "CONTACT_SUPPORT"),
}


def xid_ladder(xid: int) -> Ladder:
    """The ladder for ``xid`` (an unknown one gets the cautious default)."""
    ladder = XID_LADDERS.get(xid)
    if ladder is not None:
        return ladder
    meaning, severity, steps, bucket = UNKNOWN_XID[0], UNKNOWN_XID[1], UNKNOWN_XID[3], UNKNOWN_XID[2]
    return Ladder(f"xid {xid}", meaning, severity, steps, bucket)
