"""Errors that reach the operator as one clear line (never a traceback)."""


class LlmosError(Exception):
    """Base for errors whose message is meant for the operator as-is."""


class ConfigError(LlmosError):
    """A bad setting: the message names the setting and the bad value."""


class ModelError(LlmosError):
    """A model file that is missing, not GGUF, truncated, or refused by llama.cpp."""


class EngineError(LlmosError):
    """The engine child failed: it could not start, crashed, or answered with an error."""


class JournalError(LlmosError):
    """The journal file is locked, read-only, not SQLite, or damaged."""
