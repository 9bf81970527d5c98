"""The telemetry dashboard, driven by replayed and fake telemetry through Textual's pilot."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from pathlib import Path

from rich.console import Console
from textual.app import App
from textual.screen import Screen
from textual.widgets import Static

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_pynvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml  # noqa: E402

from llmos_tui.telemetry import NvmlSource, ReplaySource, Sample, Sampler  # noqa: E402
from llmos_tui.ui.dashboard import DashboardScreen  # noqa: E402

TRACE = Path(__file__).resolve().parent / "data" / "trace_throttle.jsonl"


class DashApp(App):
    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self.sampler = sampler

    def on_mount(self) -> None:
        self.push_screen(DashboardScreen(self.sampler))


def screen_text(app: App) -> str:
    """What the terminal shows now, as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def replayed(n: int) -> Sampler:
    """A sampler that has replayed the first ``n`` samples of the shipped trace."""
    sampler = Sampler(ReplaySource(TRACE, speed=0))
    for _ in range(n):
        sampler.poll_once()
    return sampler


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_replayed_power_cap_shows_name_power_and_reason_in_words():
    app = DashApp(replayed(100))  # 100 s in: at the power cap
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        sample = app.sampler.latest
        assert "NVIDIA H100 80GB HBM3" in text
        assert f"{sample.gpus[0].power:.0f} / 700 W" in text
        assert "POWER CAP" in text and "THROTTLED" in text
        assert "generating" in text and "llama-3.1-8b-instruct-f16" in text
        assert "◀ engine" in text and "48213" in text
        assert f"{sample.engine['last_gen_tps']:.1f}" in text


async def test_replayed_thermal_throttle_and_gpu_process_table():
    app = DashApp(replayed(190))  # hot: SW + HW thermal slowdown
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "SW THERMAL SLOWDOWN" in text and "HW THERMAL SLOWDOWN" in text
        assert "POWER CAP" not in text
        assert "/87" in text  # temperature against the slowdown threshold
        assert "HBM" in text and "XID none" in text
        assert "Host" in text and "of 32" in text


async def test_live_samples_arrive_from_the_sampler_thread():
    sampler = Sampler(ReplaySource(TRACE, speed=40))
    app = DashApp(sampler)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        sampler.start()
        await wait_for(lambda: screen.renders >= 3)
        first = screen.shown.ts
        await wait_for(lambda: screen.shown.ts > first)
        await pilot.pause()
        assert "NVIDIA H100 80GB HBM3" in screen_text(app)
        sampler.stop()  # from the UI thread while samples are in flight: must not deadlock
        assert not sampler.running


async def test_no_gpu_says_so_and_still_shows_host_and_engine():
    from llmos_tui.telemetry import HostSource

    sampler = Sampler(NvmlSource(nvml=FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)), HostSource(),
                      engine_stats=lambda: {"state": "ready", "model": "demo", "n_ctx": 2048, "ctx_used": 12})
    sampler.poll_once()
    app = DashApp(sampler)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "No NVIDIA GPU: NVML Shared Library Not Found" in text
        assert "Host" in text and "cpu" in text
        assert "ready" in text and "demo" in text


async def test_lost_gpu_and_xid_are_shown():
    fake = FakeNvml([FakeGpu()])
    sampler = Sampler(NvmlSource(nvml=fake))
    sampler.poll_once()
    fake.fall_off_bus(0)
    sampler.poll_once()
    app = DashApp(sampler)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "LOST" in text and "GPU is lost" in text and "XID 79" in text


async def test_readable_at_80x24():
    app = DashApp(replayed(100))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        for needle in ("GPU 0", "util", "vram", "power", "temp", "POWER CAP"):
            assert needle in text, needle


class Cover(Screen):
    def compose(self):
        yield Static("another screen")


async def test_hidden_dashboard_skips_work_and_catches_up():
    fake = FakeNvml([FakeGpu(power_mw=100_000)])
    sampler = Sampler(NvmlSource(nvml=fake))
    sampler.poll_once()
    app = DashApp(sampler)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        dash = app.screen
        renders = dash.renders
        app.push_screen(Cover())
        await pilot.pause()
        fake.gpus[0].power_mw = 333_000
        for _ in range(3):
            await asyncio.to_thread(sampler.poll_once)  # from a thread, as the sampler does
        await pilot.pause()
        assert dash.renders == renders  # nothing drawn while hidden
        app.pop_screen()
        await pilot.pause()
        assert dash.renders == renders + 1 and dash.shown is sampler.latest
        assert "333 / 700 W" in screen_text(app)


async def test_unsubscribes_when_removed():
    sampler = Sampler(NvmlSource(nvml=FakeNvml([FakeGpu()])))
    app = DashApp(sampler)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        assert len(sampler._observers) == 1
    assert len(sampler._observers) == 0
    assert isinstance(sampler.poll_once(), Sample)  # no subscriber left to call into a dead app


async def test_switching_modes_pauses_and_resumes_the_dashboard():
    fake = FakeNvml([FakeGpu(power_mw=100_000)])
    sampler = Sampler(NvmlSource(nvml=fake))
    sampler.poll_once()

    class ModesApp(App):
        MODES = {"dashboard": lambda: DashboardScreen(sampler), "other": Cover}

        def on_mount(self) -> None:
            self.switch_mode("dashboard")

    app = ModesApp()
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await app.switch_mode("other")
        await pilot.pause()
        renders = dash.renders
        fake.gpus[0].power_mw = 444_000
        await asyncio.to_thread(sampler.poll_once)
        await pilot.pause()
        assert dash.renders == renders
        await app.switch_mode("dashboard")
        await pilot.pause()
        assert app.screen is dash and "444 / 700 W" in screen_text(app)
