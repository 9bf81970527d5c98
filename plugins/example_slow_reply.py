"""Example detector plugin: replies that take too long before their first token.

Copy this file into your plugin folder (`llmos-tui info` prints where) and change it.
A detector gets a DetectorContext and returns findings; nothing else is needed.

Settings come from the config, e.g.::

    [doctor."example.slow_reply"]
    mode = "suggest"
    max_ttft_ms = 1500
"""

from llmos_tui.doctor import detector


@detector("example.slow_reply", "warning", needs=("sample",), timeout=1.0)
def slow_reply(ctx):
    """The last reply took longer than max_ttft_ms to start."""
    limit = float(ctx.setting("max_ttft_ms", 2000.0))
    ttft = ctx.latest("engine.ttft_ms")  # a telemetry series; see llmos_tui/telemetry/series.py for names
    if ttft is None or ttft <= limit:
        return []
    return [ctx.finding(
        f"slow reply: first token after {ttft:.0f} ms (limit {limit:.0f} ms)",
        evidence={"ttft_ms": ttft, "limit_ms": limit, "recent_ttft_ms": ctx.window("engine.ttft_ms", 10)},
        repairs=["example.fewer_threads"],
    )]
