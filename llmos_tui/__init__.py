"""llmos-tui: a terminal cockpit for operating a local LLM on a GPU box."""

__version__ = "0.1.0"
