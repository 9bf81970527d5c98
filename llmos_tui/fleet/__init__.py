"""The fleet: many GPU boxes from one terminal, on Ray (the optional ``fleet`` extra).

- :mod:`llmos_tui.fleet.agent`: the box agent, one Ray actor per box (placed by the node label
  ``llmos/box=<name>``), over that box's own daemon (`llmos-tui serve`);
- :mod:`llmos_tui.fleet.view`: the head's view of every box (alive, unavailable, dead, stale and
  since when) and the fleet journal (each box's entries copied into the head's journal);
- :mod:`llmos_tui.fleet.collector`: the standing collector, a detached named actor on the head
  that runs the view's poll every N s, so the head's journal keeps up with nobody watching
  (`fleet collect`);
- :mod:`llmos_tui.fleet.local`: a fleet on one machine (tests, benchmarks, a first try).

Ray is imported only in this package, and only when a fleet function runs: importing
``llmos_tui.fleet`` itself does not need Ray.
"""

from __future__ import annotations

NAMESPACE = "llmos"  # the Ray namespace of the box agents
LABEL = "llmos/box"  # the node label that names a box
AGENT_PREFIX = "llmos-box-"  # an agent's actor name: llmos-box-<box>


def agent_name(box: str) -> str:
    return f"{AGENT_PREFIX}{box}"


def check_box_name(box: str) -> str | None:
    """Why ``box`` cannot name a box (it is a Ray label value), or None."""
    import re

    if not box or len(box) > 63 or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?", box):
        return (f"box name {box!r}: 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter "
                "or digit (it is a Ray node label value)")
    return None


def use_cluster_token() -> None:
    """A driver that has the cluster's token uses it: RAY_AUTH_MODE=token when a token is there
    (Ray turns token mode on by itself only for a cluster it starts, and reads the mode once, when
    it is first imported and initialised). A RAY_AUTH_MODE the operator set is left alone."""
    import os

    if "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or os.path.isfile(os.path.expanduser("~/.ray/auth_token"))):
        os.environ["RAY_AUTH_MODE"] = "token"
        refresh_ray_auth()


def refresh_ray_auth() -> None:
    """Make an already imported Ray read RAY_AUTH_MODE and the token again (as Ray's own
    ``_enable_token_auth`` does): it caches both when first imported."""
    import sys

    if "ray._raylet" not in sys.modules:
        return
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray: its own rules
        pass


def require_ray() -> None:
    """Raise a one-line error when the fleet extra is not installed (and set the token mode
    before Ray is first imported: :func:`use_cluster_token`)."""
    use_cluster_token()
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        from llmos_tui.errors import LlmosError

        raise LlmosError("the fleet needs Ray: pip install 'llmos-tui[fleet]'") from None
