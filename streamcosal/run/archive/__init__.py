"""Resumable batch processing of video archives: one unit per video, a manifest of finished units.

A *unit* is one video processed by the pipeline (:func:`streamcosal.run.pipeline.run_pipeline`) with
one model and one set of parameters. It is keyed by ``(video content hash, model identity,
parameters)``; the key names everything the unit writes (``storage.layout.RunLayout``), so a rerun
knows what is done::

    out/frames/source_key=<k>/arc-<key>.<seq>.parquet   its rows (run id ``arc-<key>``)
    out/events/source_key=<k>/arc-<key>.events-<hex>.parquet  its events
    out/overlays/arc-<key>/<k>.mp4                       its overlay video (with ``overlay``)
    out/runs/arc-<key>.json                              the pipeline's run report
    out/archive/stores/<key>.npz                         its consensus store
    out/archive/consensus.npz                            every committed video's consensus, merged by
                                                         :func:`rebuild_archive_store` (``streamcosal search``)
    out/archive/manifest/<key>.json                      its manifest record: done, partial or failed

A unit is *committed* when its manifest record says ``done`` or ``partial`` (the video was
damaged: the decodable part was processed, the warnings say what was lost); the record is written
(atomically) only after the pipeline has finished and closed every file. Files of a run id
``arc-<key>`` without a committed record belong to an attempt that was killed or failed:
:func:`discard_uncommitted` deletes them when an archive run starts (and :func:`run_unit` before
each attempt), and :func:`read_committed` ignores them meanwhile. Because the run id is the key
(not a fresh random id) and each attempt starts from nothing, a killed run resumed leaves exactly
the rows an uninterrupted run leaves: no duplicates, no partial files.

A video that fails is recorded as ``failed`` with its error (its attempt's files are deleted);
it is tried again on the next run. Failures the pipeline reports for a source (cannot be opened,
not a video, no frames) are permanent (:class:`UnitFailed` with ``transient=False``: retrying
cannot help); out of memory, a full disk or a lost GPU, raised or met inside a group
(``SourceRun.transient``), are worth retrying.

One archive run at a time per ``out`` (:func:`archive_lock`): the start-up clean-up would
otherwise delete the files of another run's unit in progress. ``streamcosal video`` runs (other
run ids) may write to the same ``out`` meanwhile.

The package: ``units`` (keys, records), ``manifest``, ``files`` (a unit's files, found by run id),
``lock``, ``summary``, ``run`` (running units and whole archives).
"""

from streamcosal.run.archive.files import archive_run_ids, discard_run, discard_uncommitted, read_committed, run_files
from streamcosal.run.archive.lock import ArchiveBusy, archive_lock
from streamcosal.run.archive.manifest import Manifest, done_keys
from streamcosal.run.archive.run import (
                                         ArchivePlan,
                                         UnitFailed,
                                         is_transient,
                                         prepare,
                                         rebuild_archive_store,
                                         run_archive,
                                         run_unit,
)
from streamcosal.run.archive.summary import ArchiveFailed, ArchiveSummary, summarize
from streamcosal.run.archive.units import (
                                         ARCHIVE_DIR,
                                         COMMITTED,
                                         RUN_PREFIX,
                                         VIDEO_SUFFIXES,
                                         Status,
                                         Unit,
                                         UnitRecord,
                                         list_videos,
                                         plan_units,
)

__all__ = [
    "ARCHIVE_DIR",
    "ArchiveBusy",
    "ArchiveFailed",
    "ArchivePlan",
    "ArchiveSummary",
    "COMMITTED",
    "Manifest",
    "RUN_PREFIX",
    "Status",
    "Unit",
    "UnitFailed",
    "UnitRecord",
    "VIDEO_SUFFIXES",
    "archive_lock",
    "archive_run_ids",
    "discard_run",
    "discard_uncommitted",
    "done_keys",
    "is_transient",
    "list_videos",
    "plan_units",
    "prepare",
    "read_committed",
    "rebuild_archive_store",
    "run_archive",
    "run_files",
    "run_unit",
    "summarize",
]
