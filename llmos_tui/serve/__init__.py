"""The headless daemon: the core serving an OpenAI-compatible HTTP API (`llmos-tui serve`).

This package imports the core; the core never imports it. Its parts:

- :mod:`~llmos_tui.serve.settings`: the ``[serve]`` table and the listen address rules
- :mod:`~llmos_tui.serve.lock`: one daemon per journal
- :mod:`~llmos_tui.serve.gate`: the bounded queue in front of the single engine (429, 503, drain)
- :mod:`~llmos_tui.serve.schema`: the request bodies (pydantic)
- :mod:`~llmos_tui.serve.api`: the Starlette routes
- :mod:`~llmos_tui.serve.traffic`: per-request metrics, journal rows, doctor events
- :mod:`~llmos_tui.serve.daemon`: the process (uvicorn in the foreground, SIGTERM drains)

Needs the ``serve`` extra (starlette, uvicorn, pydantic): ``pip install 'llmos-tui[serve]'``.
"""
