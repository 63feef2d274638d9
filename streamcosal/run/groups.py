"""Which sources a run processes, in which groups: each source once, one group per source by default,
named after it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from streamcosal.io.redact import redact
from streamcosal.io.stream import is_stream
from streamcosal.run.consensus import source_identity_of
from streamcosal.run.records import RunReport, SourceSettings
from streamcosal.storage import ConsensusStore

logger = logging.getLogger(__name__)


def group_name(spec: str | Path) -> str:
    """The default group of a source: a file's stem, a folder's name, a URL as it is (its password
    replaced by ***: `redact`)."""
    if is_stream(spec):
        return redact(str(spec))
    path = Path(spec)
    return path.name if path.is_dir() else path.stem


def default_groups(sources: Sequence[str | Path], store: ConsensusStore | None = None,
                   per_source: Mapping[str, SourceSettings] | None = None) -> list[tuple[str, list[str | Path]]]:
    """One group per source, named by `group_name`; a source is named by its path as given instead
    when another source of the run has its name (two `clip.mp4` in different folders) or when the
    store holds that name computed from another source (an earlier run's other `clip.mp4`).
    A source whose own settings (`per_source`, by its name `redact(spec)`) name a group is in that group
    (first, in the order of the sources); the others' names leave those groups' names out."""
    own = {name: settings.group for name, settings in (per_source or {}).items() if settings.group}
    named: dict[str, list[str | Path]] = {}
    for spec in sources:
        if redact(str(spec)) in own:
            named.setdefault(own[redact(str(spec))], []).append(spec)
    sources = [spec for spec in sources if redact(str(spec)) not in own]
    names = [group_name(s) for s in sources]
    paths = {n: {str(s) for m, s in zip(names, sources) if m == n} for n in names}

    def taken(name: str, spec: str | Path) -> bool:
        known = store.source(name) if store is not None and name in store else None
        return known is not None and known != source_identity_of(spec)

    return [*named.items(), *((redact(str(s)) if len(paths[n]) > 1 or taken(n, s) or n in named else n, [s])
                              for n, s in zip(names, sources))]


def once(sources: Sequence[str | Path], report: RunReport) -> list[str | Path]:
    """``sources`` without repeats (the same file, folder or camera given twice); each one left out is noted."""
    kept: dict[str, str | Path] = {}
    for spec in sources:
        first = kept.setdefault(source_identity_of(spec), spec)
        if first is not spec:
            report.notes.append(f"{redact(str(spec))} is listed more than once (as {redact(str(first))}): processed once")
            logger.warning("%s", report.notes[-1])
    return list(kept.values())
