"""Per-frame co-saliency results: ``FrameResult``, the Parquet ``ResultWriter``, ``read_results``.

Files land in ``root/frames/source_key=<key>/<run_id>.<seq>.parquet`` (see ``schema.py``). Any
Parquet reader can read the folder without streamcosal, e.g.::

    duckdb.sql("select * from read_parquet('root/frames/**/*.parquet', hive_partitioning=true)")
    pandas.read_parquet("root/frames")
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .masks import encode_mask, encode_prob_png, mask_bbox, mask_stats
from .parquet_files import PARTITION_KEY, read_files, source_key, write_atomic
from .schema import MODEL_KEY, RESULT_SCHEMA

FRAMES_DIR = "frames"

# Run ids become file names: a leading letter or digit, then letters, digits, '-' and '_'.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class FrameResult:
    """The result for one processed frame.

    ``mask`` is [H, W] bool at the resolution of the original frame; height, width, the RLE, the
    box and the area fraction are derived from it when the row is written.
    """

    source: str  # file path, stream URL or camera name
    group: str  # group or track name
    window: int
    frame_index: int
    timestamp: float  # seconds
    mask: np.ndarray  # [H, W] bool
    mean_prob: float  # mean probability inside the mask
    similarity: float  # GIM similarity: consensus . own logits
    model_name: str
    model_version: str
    prob_png: bytes | None = None  # small 8-bit probability map, see masks.encode_prob_png
    latency_s: float | None = None  # live: seconds from capture to this result

    @classmethod
    def from_prob(
        cls,
        *,
        source: str,
        group: str,
        window: int,
        frame_index: int,
        timestamp: float,
        prob: np.ndarray,
        similarity: float,
        model_name: str,
        model_version: str,
        threshold: float = 0.5,
        keep_prob_png: bool = False,
        latency_s: float | None = None,
    ) -> "FrameResult":
        """Build a result from a [H, W] probability map in [0, 1] (mask = prob >= threshold)."""
        mask, _, _, mean_prob = mask_stats(prob, threshold)
        return cls(
            source=source,
            group=group,
            window=window,
            frame_index=frame_index,
            timestamp=timestamp,
            mask=mask,
            mean_prob=mean_prob,
            similarity=similarity,
            model_name=model_name,
            model_version=model_version,
            prob_png=encode_prob_png(prob) if keep_prob_png else None,
            latency_s=latency_s,
        )

    def to_row(self, run_id: str) -> dict[str, Any]:
        """The row of ``RESULT_SCHEMA`` for this frame."""
        rle = encode_mask(self.mask)  # validates the mask: [H, W], binary
        mask = np.asarray(self.mask, dtype=bool)
        bbox = mask_bbox(mask)
        return {
            "run_id": run_id,
            "source": self.source,
            "group": self.group,
            "window": self.window,
            "frame_index": self.frame_index,
            "timestamp": self.timestamp,
            "height": mask.shape[0],
            "width": mask.shape[1],
            "mask_rle": rle,
            "bbox": list(bbox) if bbox is not None else None,
            "area_fraction": float(mask.mean()),
            "mean_prob": self.mean_prob,
            "similarity": self.similarity,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "prob_png": self.prob_png,
            "latency_s": self.latency_s,
        }


def check_run_id(run_id: str) -> str:
    """``run_id``, or a ValueError where it cannot name the run's files."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id {run_id!r} cannot be used in file names: use letters, digits, '-' and '_', "
                         "starting with a letter or digit")
    return run_id


class ResultWriter:
    """Buffers ``FrameResult`` rows and flushes them as Parquet files partitioned by source.

    Each flush writes one file per source in the buffer, named ``<run_id>.<seq:06d>.parquet``,
    atomically (temporary hidden file, then rename). Files of other runs are never touched, so
    runs append to the same root. If the process dies, every flushed file is complete and only
    the unflushed rows are lost. A source marked with :meth:`stage` is written under hidden names
    (``.<run_id>.<seq:06d>.parquet``: readers skip them) until :meth:`commit` renames them all at
    once: its results become visible as a whole, and a killed run's stay hidden. Not thread-safe: use one writer per thread. ``model`` (name,
    version, precision, device) is written into every file's schema metadata under ``MODEL_KEY``.

    Usage::

        with ResultWriter(root, run_id="2024-06-01-cam3") as writer:
            for result in results:
                writer.write(result)
    """

    def __init__(self, root: Path, run_id: str, flush_every: int = 1024, model: dict[str, str] | None = None) -> None:
        check_run_id(run_id)
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.directory = Path(root) / FRAMES_DIR
        existing = sorted(self.directory.glob(f"{PARTITION_KEY}=*/{run_id}.*.parquet"))
        if existing:
            raise FileExistsError(
                f"run_id {run_id!r} already has results in {self.directory} (e.g. {existing[0]}); "
                "choose a new run id, or delete that run's files to redo it"
            )
        self.run_id = run_id
        self.flush_every = flush_every
        self.schema = RESULT_SCHEMA if model is None else RESULT_SCHEMA.with_metadata(
            {**RESULT_SCHEMA.metadata, MODEL_KEY: json.dumps(model, sort_keys=True).encode()})
        self.files: list[Path] = []  # every file written so far
        self._staged: dict[str, list[Path]] = {}  # a staged source -> its hidden files so far
        self.saved: dict[str, int] = {}  # rows written to disk, by source
        self._written: dict[str, int] = {}  # a source -> the last file number written for it
        self._rows: list[dict[str, Any]] = []
        self._seq = 0
        self._closed = False

    def write(self, result: FrameResult) -> None:
        """Buffer one frame's result; flushes when ``flush_every`` rows are buffered."""
        if self._closed:
            raise RuntimeError(f"ResultWriter for run {self.run_id!r} is closed; open a new one")
        self._rows.append(result.to_row(self.run_id))
        if len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows (if any) to new files, one per source."""
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        name = f"{self.run_id}.{self._seq:06d}.parquet"
        for source in pc.unique(table["source"]).to_pylist():
            if self._written.get(source, -1) >= self._seq:
                continue  # written by an earlier try of this flush (the disk was full for another source)
            part = table.filter(pc.equal(table["source"], source))
            staged = source in self._staged
            path = self.directory / f"{PARTITION_KEY}={source_key(source)}" / (("." if staged else "") + name)
            write_atomic(part, path)
            (self._staged[source] if staged else self.files).append(path)
            self._written[source] = self._seq
            self.saved[source] = self.saved.get(source, 0) + part.num_rows
        self._seq += 1
        self._rows = []

    def stage(self, source: str) -> None:
        """Write ``source``'s rows hidden until :meth:`commit`."""
        self._staged.setdefault(source, [])

    def commit(self, source: str) -> list[Path]:
        """Make a staged source's rows visible, all at once (its buffered rows written first); its files.
        When writing the buffered rows fails (a full disk), what was written is made visible all the same,
        then the error is raised (``saved`` counts only rows on disk)."""
        try:
            self.flush()
        finally:
            visible = []
            for path in self._staged.pop(source, []):
                target = path.with_name(path.name[1:])
                path.replace(target)
                visible.append(target)
            self.files += visible
        return visible

    def close(self) -> None:
        """Flush the remaining rows (staged sources stay hidden until committed). Closing twice is harmless."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an exception the buffered rows are still complete results: keep them, then let the
        # exception propagate.
        self.close()


def read_results(root: Path) -> pa.Table:
    """All frame results under ``root`` (every run and source), as a ``RESULT_SCHEMA`` table.

    Raises:
        FileNotFoundError: ``root`` holds no ``frames`` folder.
        ValueError: a file there is not ours, not Parquet, or of another schema version.
    """
    return read_files(Path(root) / FRAMES_DIR, RESULT_SCHEMA)

