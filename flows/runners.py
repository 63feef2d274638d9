"""The task runner the archive and evaluation flows run their units on (see ``settings``).

- threads (default): ``ThreadPoolTaskRunner(max_workers)``: bounded concurrency in the flow's process.
- ray: ``prefect_ray.RayTaskRunner`` (``pip install 'streamcosal[dist]'``) on the cluster at
  ``STREAMCOSAL_RAY_ADDRESS`` (a local Ray instance when empty); each unit reserves
  ``STREAMCOSAL_GPUS_PER_UNIT`` GPUs (auto: one where the cluster has GPUs).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from prefect.task_runners import ThreadPoolTaskRunner

from .settings import OrchestrationSettings


class MissingExtra(RuntimeError):
    """The configured task runner needs a package that is not installed."""


def task_runner(settings: OrchestrationSettings | None = None) -> Any:
    settings = settings or OrchestrationSettings.from_env()
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.max_workers)
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as e:
        raise MissingExtra("STREAMCOSAL_TASK_RUNNER=ray needs prefect-ray: pip install 'streamcosal[dist]' "
                           "(or use the default thread runner)") from e
    init_kwargs = {} if settings.ray_address else {"include_dashboard": False}
    return RayTaskRunner(address=settings.ray_address, init_kwargs=init_kwargs)


@contextlib.contextmanager
def unit_resources(settings: OrchestrationSettings | None = None) -> Iterator[None]:
    """Around ``task.submit``: on Ray, reserve the GPUs one unit needs; elsewhere nothing."""
    settings = settings or OrchestrationSettings.from_env()
    if settings.task_runner != "ray":
        yield
        return
    import ray
    from prefect_ray.context import remote_options

    gpus = settings.gpus_per_unit
    if gpus is None:
        gpus = 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    if not gpus:
        yield
        return
    with remote_options(num_gpus=gpus):
        yield


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """A task's retry condition: retry only a failure that may be transient (out of memory, I/O), not a missing
    or damaged input, which fails again."""
    from streamcosal.evaluation.report import EvalBatchError
    from streamcosal.run.archive import is_transient

    try:
        state.result()
    except EvalBatchError:  # images that could not be segmented: the same ones fail again
        return False
    except BaseException as error:  # noqa: BLE001 - the task's own exception, re-raised by result()
        return is_transient(error)
    return False
