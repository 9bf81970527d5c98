"""The built-in detectors, one module per family, registered through the same ``@detector``
API plugins use: ``engine`` (life: crash, crash loop, OOM, canary), ``gpu`` (health),
``performance`` (speed), ``telemetry`` (anomaly), ``conversation`` (replies, context), ``traffic`` (the daemon's served requests).

Each reads the context (telemetry windows, engine events, log lines, the last reply) and
returns findings with the evidence that proves them. Thresholds can be overridden per
detector in the ``[doctor]`` config (``settings``).
"""

from llmos_tui.doctor.detectors import conversation, engine, gpu, performance, telemetry, traffic, trends  # noqa: F401
