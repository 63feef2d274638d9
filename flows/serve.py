"""Serve every deployment of :mod:`.deployments` from this process (``streamcosal serve``).

A served deployment runs only while this process lives: each flow run starts in a subprocess of
it. Needs a Prefect API (``PREFECT_API_URL``), e.g. a local ``prefect server start``.
"""

from __future__ import annotations

import os

from .settings import OrchestrationSettings


class NoPrefectAPI(RuntimeError):
    """No Prefect API is configured: deployments served against a temporary in-process API could
    not be triggered from anywhere else."""


def serve(settings: OrchestrationSettings | None = None, limit: int | None = None) -> None:
    """Register and serve the deployments until interrupted (Ctrl-C or SIGTERM).

    Raises:
        NoPrefectAPI: ``PREFECT_API_URL`` is not set (in the environment or the Prefect profile).
    """
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "streamcosal")
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise NoPrefectAPI(
            "no Prefect API to serve to: start a local server (prefect server start --host 127.0.0.1) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (or: prefect config set PREFECT_API_URL=...)")

    check_api(str(PREFECT_API_URL.value()))
    from .deployments import deployments

    prefect_serve(*deployments(settings), limit=limit)


def check_api(url: str, timeout_s: float = 10.0) -> None:
    """Raise NoPrefectAPI, saying what to do, unless ``url`` answers as a Prefect API (GET /health)."""
    import httpx

    fix = "start it (prefect server start --host 127.0.0.1) or fix PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
    if not url.startswith(("http://", "https://")):
        raise NoPrefectAPI(f"PREFECT_API_URL={url!r} is not an http(s):// URL; {fix}")
    try:
        answer = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s)
    except httpx.HTTPError as e:
        raise NoPrefectAPI(f"no Prefect API answers at PREFECT_API_URL={url} ({e.__class__.__name__}: {e}); {fix}") from e
    if answer.status_code != 200:
        raise NoPrefectAPI(f"PREFECT_API_URL={url} is not a Prefect API (GET /health gave HTTP {answer.status_code}; "
                           f"the URL ends in /api); {fix}")


if __name__ == "__main__":
    serve()
