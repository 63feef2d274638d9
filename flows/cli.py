"""``streamcosal serve``: the command line's one orchestration command, contributed by the flows
package (entry point ``streamcosal.commands``), so the library's CLI never imports the flows. Prefect
is imported only when the command runs."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape


def serve(
    task_runner: Annotated[Optional[str], typer.Option("--task-runner", help="threads (default) or ray: where archive/eval units run.")] = None,
    max_workers: Annotated[Optional[int], typer.Option("--max-workers", min=1, help="Threads: units at once (default 2).")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray: ray://HEAD:10001 or auto (default: a local Ray).")] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="Time zone of the nightly cron schedules (default UTC).")] = None,
) -> None:
    """Serve the Prefect deployments (cosal-video/default, cosal-archive/nightly, cosal-eval/nightly,
    cosal-train/default) until Ctrl-C. Needs the flows extra (pip install 'streamcosal[flows]') and
    PREFECT_API_URL (e.g. a local `prefect server start`). Other settings: STREAMCOSAL_* variables,
    see docs/orchestration.md."""
    err = Console(stderr=True, soft_wrap=True)
    for name, value in (("TASK_RUNNER", task_runner), ("MAX_WORKERS", max_workers), ("RAY_ADDRESS", ray_address),
                        ("TIMEZONE", timezone)):
        if value is not None:
            os.environ[f"STREAMCOSAL_{name}"] = str(value)  # flow runs (subprocesses) read the same settings
    try:
        import prefect  # noqa: F401  (the extra's presence)
    except ImportError:
        err.print("[red]error:[/red] serving deployments needs Prefect: pip install 'streamcosal[flows]'")
        raise typer.Exit(2) from None
    from streamcosal.flows.runners import MissingExtra
    from streamcosal.flows.serve import NoPrefectAPI
    from streamcosal.flows.serve import serve as serve_deployments
    from streamcosal.flows.settings import OrchestrationSettings

    try:
        serve_deployments(OrchestrationSettings.from_env())
    except (ValueError, NoPrefectAPI, MissingExtra) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
