"""The doctor screen over a doctor without an engine: findings appear, keys decide."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import DataTable, Static

from llmos_tui.doctor import Doctor, Finding, PluginManager, Policy
from llmos_tui.telemetry import Sampler
from llmos_tui.telemetry.sample import Sample
from llmos_tui.ui.doctor_screen import DoctorScreen


class _Nothing:
    def collect(self, sample: Sample) -> None:
        return None


class Host(App[None]):
    def __init__(self, doctor: Doctor) -> None:
        super().__init__()
        self.doctor = doctor

    def on_mount(self) -> None:
        self.push_screen(DoctorScreen(self.doctor))


@pytest.fixture
def doctor() -> Doctor:
    manager = PluginManager()
    manager.load_all(folders=[], entry_points=False)
    return Doctor(None, Sampler(_Nothing(), interval=1.0), None, Policy(), plugins=manager)


async def test_findings_show_and_keys_work(doctor: Doctor) -> None:
    app = Host(doctor)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DoctorScreen)
        # a finding arrives from another thread, as the doctor's do
        import threading

        finding = Finding(title="GPU 0 XID 79: GPU has fallen off the bus", severity="critical",
                          detector="gpu.xid_ecc", fingerprint="x", evidence={"xid": 79})
        t = threading.Thread(target=lambda: doctor._add(finding))
        t.start()
        t.join()
        await pilot.pause()
        await pilot.pause()
        table = screen.query_one("#doctor-findings", DataTable)
        assert table.row_count == 1
        detail = str(screen.query_one("#doctor-detail", Static).render())
        assert "XID 79" in detail and '"xid": 79' in detail
        await pilot.press("k")
        assert doctor.kill_switch is True
        status = str(screen.query_one("#doctor-status", Static).render())
        assert "KILL SWITCH ON" in status
        await pilot.press("k")
        assert doctor.kill_switch is False
        await pilot.press("r")
        for _ in range(20):
            await pilot.pause(0.05)
            if finding.state == "rejected":
                break
        assert finding.state == "rejected"


async def test_l_resets_the_start_limit_through_the_operators_verb(doctor: Doctor) -> None:
    """The rail can be operated: the status says how, and l calls the verb it is given."""
    calls: list[str] = []

    def reset() -> str:  # the Operator's reset_start_limit, as the app passes it
        calls.append("reset")
        doctor.reset_start_limit()
        return "start limit reset: automatic restarts allowed again"

    class WithReset(App[None]):
        def on_mount(self) -> None:
            self.push_screen(DoctorScreen(doctor, reset_start_limit=reset))

    doctor.runner.start_limit_hit = True
    app = WithReset()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        status = str(app.screen.query_one("#doctor-status", Static).render())
        assert "start limit reached" in status and "l or :reset-limit resets it" in status
        await pilot.press("l")
        for _ in range(40):
            await pilot.pause(0.05)
            if not doctor.start_limit_hit:
                break
        assert calls == ["reset"] and doctor.start_limit_hit is False
        await pilot.pause(0.1)
        assert "start limit reached" not in str(app.screen.query_one("#doctor-status", Static).render())
        assert any("start limit reset" in str(n.message) for n in app._notifications)
