"""What an archive run did, unit by unit: a summary, its Markdown table, and the error raised after
the others finished."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from streamcosal import markdown
from streamcosal.run.archive.manifest import Manifest
from streamcosal.run.archive.units import Unit, UnitRecord


class ArchiveFailed(RuntimeError):
    """Some videos of an archive run failed; the others were processed. ``summary`` says which."""

    def __init__(self, summary: "ArchiveSummary"):
        self.summary = summary
        failed = summary.failed
        lines = "\n".join(f"  {r.video}: {r.error}" for r in failed)
        super().__init__(f"{len(failed)} of {len(summary.records)} video(s) failed:\n{lines}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.summary,))


@dataclass
class ArchiveSummary:
    """What an archive run did, unit by unit, in plan order; ``duplicates``: video -> the video it repeats."""

    out: str
    records: list[UnitRecord]
    duplicates: dict[str, str] = field(default_factory=dict)
    discarded: list[str] = field(default_factory=list)  # run ids of uncommitted attempts deleted at the start

    @property
    def failed(self) -> list[UnitRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        return {
            "processed": sum(r.committed and not r.skipped for r in self.records),
            "skipped": sum(r.skipped for r in self.records),
            "partial": sum(r.status == "partial" for r in self.records),
            "failed": len(self.failed),
            "duplicates": len(self.duplicates),
        }

    def markdown(self) -> str:
        c = self.counts()
        lines = [
            f"# cosal-archive: {len(self.records)} video(s) in `{self.out}`", "",
            f"**{c['failed']} failed**, {c['processed']} processed, {c['skipped']} already done (skipped), "
            f"{c['partial']} partial (damaged video: the decodable part was processed), "
            f"{c['duplicates']} duplicate(s) not run twice.", "",
        ]
        order = {"failed": 0, "partial": 1, "done": 2}
        rows = [[f"`{r.video}`", "done (skipped)" if r.skipped else r.status, r.frames, f"{r.seconds:.1f}", r.attempts,
                 f"`{r.run_id}`", r.error or "; ".join(r.warnings[:2])]
                for r in sorted(self.records, key=lambda r: order[r.status])]
        rows += [[f"`{video}`", f"duplicate of `{first}`", "", "", "", "", "same bytes: not run twice"]
                 for video, first in self.duplicates.items()]
        lines += markdown.table(["video", "status", "frames", "seconds", "attempts", "run id", "error / warnings"],
                                rows, align="llrrr")
        if self.discarded:
            lines += ["", f"Deleted the files of {len(self.discarded)} unfinished attempt(s) of an earlier run: "
                      + ", ".join(f"`{r}`" for r in self.discarded)]
        lines += ["", f"Rows: `streamcosal.run.archive.read_committed('{self.out}')`, or any Parquet reader on "
                  f"`{self.out}/frames`."]
        return "\n".join(lines) + "\n"


def summarize(out: str | Path, units: Sequence[Unit], duplicates: dict[str, str] | None = None,
              skipped: Sequence[str] = (), discarded: Sequence[str] = ()) -> ArchiveSummary:
    """The summary of a run over ``units`` from the manifest; ``skipped``: keys found done at the start."""
    manifest = Manifest(out)
    records = []
    for unit in units:
        record = manifest.get(unit.key)
        if record is None:  # never reached (e.g. the run was cancelled)
            record = UnitRecord(unit.key, unit.video, unit.content_hash, unit.model, unit.params, "failed",
                                unit.run_id, error="not processed: the run ended before this video")
        record.skipped = unit.key in set(skipped)
        records.append(record)
    return ArchiveSummary(str(out), records, dict(duplicates or {}), list(discarded))
