"""Serve every deployment of :mod:`.deployments` from this process (``streamcosal serve``).

A served deployment runs only while this process lives: each flow run starts in a subprocess of
it. Needs a Prefect API (``PREFECT_API_URL``), e.g. a local ``prefect server start``.
"""

from __future__ import annotations

import os

from .settings import OrchestrationSettings


def serve(settings: OrchestrationSettings | None = None, limit: int | None = None) -> None:
    """Register and serve the deployments until interrupted (Ctrl-C or SIGTERM)."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "streamcosal")
    from prefect import serve as prefect_serve

    from .deployments import deployments

    prefect_serve(*deployments(settings), limit=limit)


if __name__ == "__main__":
    serve()
