"""The ``streamcosal`` command line: one module per command (images, train, eval, video and search),
their shared options in :mod:`streamcosal.cli.app`; other parts of the package contribute commands
through the ``streamcosal.commands`` entry points (``serve`` from the Prefect flows)."""

from importlib.metadata import entry_points

from streamcosal.cli import cameras, evaluate, export, images, train, video, view  # noqa: F401  (their commands register on app)
from streamcosal.cli.app import app

__all__ = ["app"]


def _plugin_commands() -> None:
    """Commands other parts of the package contribute, registered by name without importing their
    modules' dependencies."""
    for entry in entry_points(group="streamcosal.commands"):
        app.command(entry.name)(entry.load())


_plugin_commands()
