"""Orchestration settings: the task runner, schedules, time zone and the nightly parameters.

One home, read from the environment (``streamcosal serve`` sets it from its options), so the flow
runs a served deployment starts in subprocesses see the same settings as the serving process.

| variable | default | what |
|---|---|---|
| ``STREAMCOSAL_TASK_RUNNER`` | ``threads`` | ``threads`` (ThreadPoolTaskRunner) or ``ray`` (prefect-ray) |
| ``STREAMCOSAL_MAX_WORKERS`` | ``2`` | threads: units run at once |
| ``STREAMCOSAL_RAY_ADDRESS`` | (empty) | ray: ``ray://head:10001`` or ``auto``; empty starts a local Ray |
| ``STREAMCOSAL_GPUS_PER_UNIT`` | ``auto`` | ray: GPUs reserved per unit (``auto``: 1 when the cluster has GPUs) |
| ``STREAMCOSAL_TIMEZONE`` | ``UTC`` | time zone of the cron schedules (IANA name) |
| ``STREAMCOSAL_ARCHIVE_CRON`` | ``0 1 * * *`` | ``cosal-archive/nightly`` |
| ``STREAMCOSAL_EVAL_CRON`` | ``0 5 * * *`` | ``cosal-eval/nightly`` |
| ``STREAMCOSAL_ARCHIVE_VIDEOS`` | (empty) | nightly archive: folder, glob or ``os.pathsep``-separated list |
| ``STREAMCOSAL_ARCHIVE_OUT`` | (empty) | nightly archive: results folder |
| ``STREAMCOSAL_EVAL_DATASETS`` | (empty) | nightly evaluation: ``os.pathsep``-separated dataset folders |
| ``STREAMCOSAL_EVAL_OUT`` | (empty) | nightly evaluation: reports folder (history in ``OUT/history``) |
| ``STREAMCOSAL_EVAL_FLOORS`` | (empty) | e.g. ``maxF=0.6,S=0.65,MAE=0.12`` (MAE: a ceiling) |
| ``STREAMCOSAL_WEIGHTS`` | (empty) | checkpoint for the nightly runs (empty: the embedded model) |

A nightly deployment whose videos/datasets or output folder is not set is served with its
schedule paused (it can still be run by hand with ``--param``).
"""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass, field
from typing import Literal

RunnerKind = Literal["threads", "ray"]


@dataclass(frozen=True)
class OrchestrationSettings:
    task_runner: RunnerKind = "threads"
    max_workers: int = 2
    ray_address: str | None = None
    gpus_per_unit: float | None = None  # None: auto
    timezone: str = "UTC"
    archive_cron: str = "0 1 * * *"
    eval_cron: str = "0 5 * * *"
    archive_videos: list[str] = field(default_factory=list)
    archive_out: str | None = None
    eval_datasets: list[str] = field(default_factory=list)
    eval_out: str | None = None
    eval_floors: dict[str, float] = field(default_factory=dict)
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.task_runner not in ("threads", "ray"):
            raise ValueError(f"STREAMCOSAL_TASK_RUNNER must be 'threads' or 'ray', got {self.task_runner!r}")
        if self.max_workers < 1:
            raise ValueError(f"STREAMCOSAL_MAX_WORKERS must be >= 1, got {self.max_workers}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"STREAMCOSAL_TIMEZONE {self.timezone!r} is not an IANA time zone "
                             "(e.g. UTC, Europe/Berlin, America/New_York)") from e

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "OrchestrationSettings":
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = env.get(f"STREAMCOSAL_{name}", "").strip()
            return value or None

        def paths(name: str) -> list[str]:
            return [p for p in (get(name) or "").split(os.pathsep) if p]

        gpus = get("GPUS_PER_UNIT")
        return cls(
            task_runner=(get("TASK_RUNNER") or "threads").lower(),  # type: ignore[arg-type]
            max_workers=int(get("MAX_WORKERS") or 2),
            ray_address=get("RAY_ADDRESS"),
            gpus_per_unit=None if gpus in (None, "auto") else float(gpus),
            timezone=get("TIMEZONE") or "UTC",
            archive_cron=get("ARCHIVE_CRON") or cls.archive_cron,
            eval_cron=get("EVAL_CRON") or cls.eval_cron,
            archive_videos=paths("ARCHIVE_VIDEOS"),
            archive_out=get("ARCHIVE_OUT"),
            eval_datasets=paths("EVAL_DATASETS"),
            eval_out=get("EVAL_OUT"),
            eval_floors=parse_floors(get("EVAL_FLOORS") or ""),
            weights=get("WEIGHTS"),
        )


def parse_floors(text: str) -> dict[str, float]:
    """``"maxF=0.6,S=0.65"`` -> ``{"maxF": 0.6, "S": 0.65}``."""
    floors = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"floor {item!r} is not METRIC=VALUE (e.g. maxF=0.6)")
        floors[name.strip()] = float(value)
    return floors
