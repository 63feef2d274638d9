"""``streamcosal video`` and ``streamcosal search``: videos, streams and cameras to Parquet results, and
the stored groups nearest a query."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from pydantic import ValidationError
from rich.markup import escape

from streamcosal.params import MAX_QUERY_FRAMES, EngineSpec, RunParams, explain

if TYPE_CHECKING:
    pass

from streamcosal.cli.app import (
    ENGINE,
    RUN,
    app,
    engine_options,
    err,
    fail,
    load_engine,
    print_run,
    run_options,
    writable_folder,
)


@app.command()
@engine_options
@run_options
def video(
    sources: Annotated[list[str], typer.Argument(help="Video files, stream URLs (rtsp://, http(s)://, udp://...), /dev/videoN, pipes (/dev/stdin, a FIFO) or image folders.")],
    out: Annotated[Path, typer.Option("--out", help="Results folder: Parquet frames/ and events/, consensus.npz, overlays/, runs/.")],
    group: Annotated[Optional[str], typer.Option("--group", help="One group for every SOURCE (cameras seeing the same object); default one group per source.")] = None,
    store: Annotated[Optional[Path], typer.Option("--store", help="Consensus store file (default OUT/consensus.npz).")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Name of this run's files (default: UTC time + random suffix).")] = None,
    keep_history: Annotated[bool, typer.Option("--keep-history", help="Keep the results earlier runs wrote for these sources (default: a source's new results replace them once it is done).")] = False,
    params: RunParams = RUN,  # the run options (@run_options)
    spec: EngineSpec = ENGINE,  # the engine options (@engine_options)
) -> None:
    """Segment the object common to the frames of videos, streams or cameras; results to Parquet."""
    import logging

    from streamcosal.io.frame import SourceError
    from streamcosal.io.open import local_source
    from streamcosal.io.stream import is_stream
    from streamcosal.run.records import PipelineConfig
    from streamcosal.storage.files import check_store_path
    from streamcosal.storage.layout import STORE_FILE

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("streamcosal.run.metrics").setLevel(logging.INFO)  # the live status line
    try:
        sources = [str(local_source(s)) for s in sources]  # file:///path/clip.mp4 is the path
        missing = [s for s in sources if not is_stream(s) and not Path(s).exists()]
        if missing:  # before the model loads, and nothing written
            raise ValueError(f"no such file or folder: {', '.join(missing)}. Check the path"
                             + ("s" if len(missing) > 1 else ""))
        if group is not None and not group.strip():
            raise ValueError("--group is empty (an unset shell variable?): give the group a name, or leave --group out")
        target = out.resolve()
        inside = next((s for s in sources if not is_stream(s) and Path(s).is_dir()
                       and target.is_relative_to(Path(s).resolve())), None)
        if inside is not None:  # its results, overlays and store would be read as a group's images next time
            raise ValueError(f"--out {out} is inside the image folder {inside} given as a source: give a results "
                             "folder outside it")
        config = PipelineConfig(**params.model_dump(), store_path=store, run_id=run_id, show_progress=True,
                                keep_history=keep_history)
        writable_folder(out)
        check_store_path(store or out / STORE_FILE, "--store" if store else "the consensus store")
    except ValidationError as e:
        fail(explain(e), 2)
    except (ValueError, SourceError) as e:
        fail(str(e), 2)
    from streamcosal.run.interrupts import Interrupted
    from streamcosal.run.pipeline import run_pipeline

    engine = load_engine(spec)
    try:
        report = run_pipeline(sources, out, engine, config, group=group)
    except Interrupted as stop:
        report = stop.report
    except (ValueError, OSError) as e:  # a bad run id, a damaged store, the metrics port in use
        fail(str(e), 2)
    print_run(report, out)
    raise typer.Exit(report.exit_code)


MIN_SIMILARITY = 0.5
"""The default floor of ``search``: the consensus of 8 frames or photos is sharp, so on 7 groups of DAVIS,
PASCAL and Weizmann (21 pairs) the two horse groups scored 1.000 and every other pair 0.000 (the default
model, AMD EPYC Zen4, 2026-12-04)."""


@app.command()
@engine_options
def search(
    query: Annotated[str, typer.Argument(help="A group name in the store, or a video file, image folder or stream URL.")],
    store: Annotated[Path, typer.Option("--store", help="A results folder (its consensus.npz) or a consensus store file.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many groups.")] = 5,
    frames: Annotated[int, typer.Option("--frames", min=1, max=MAX_QUERY_FRAMES, help=(
        f"Frames sampled from the query video for its consensus (at most {MAX_QUERY_FRAMES}: they are held at once)."))] = 32,
    min_similarity: Annotated[float, typer.Option("--min-similarity", min=0.0, max=1.0, help=(
        "Groups less similar than this are not listed (cosine of the consensus: related groups score near 1, "
        "unrelated near 0; docs/video.md)."))] = MIN_SIMILARITY,
    spec: EngineSpec = ENGINE,  # the engine options (@engine_options)
) -> None:
    """The groups/videos whose consensus is nearest to the query's: they share its common object."""
    from streamcosal.io.frame import SourceError
    from streamcosal.run.search import check_query, in_store
    from streamcosal.run.search import search as nearest
    from streamcosal.storage import ConsensusStore

    path = store / "consensus.npz" if store.is_dir() else store
    if path.is_dir():
        fail(f"{path} is a folder, not a consensus store: give a results folder or its consensus.npz file", 2)
    if not path.is_file():
        fail(f"no consensus store at {path}: run `streamcosal video ... --out DIR` first", 2)
    try:
        consensus_store = ConsensusStore.open(path)
        check_query(consensus_store, query)  # a name neither in the store nor on disk: said before the model loads
        engine = None if in_store(consensus_store, query) else load_engine(spec)
        hits = nearest(consensus_store, query, engine, k=k, frames=frames)
    except (SourceError, ValueError) as e:
        fail(str(e), 2)
    if not hits:
        err.print(f"no other group in {escape(str(path))} to compare with")
        return
    similar = [(name, score) for name, score in hits if score >= min_similarity]
    if not similar:
        name, score = hits[0]
        err.print(f"no similar group in {escape(str(path))}: the nearest, {escape(name)!r}, scores {score:.4f}, below "
                  f"--min-similarity {min_similarity:g}")
        return
    hits = similar
    typer.echo("rank\tsimilarity\tgroup")  # tab-separated, with a header (cosine similarity of the consensus)
    for rank, (name, score) in enumerate(hits, 1):
        typer.echo(f"{rank}\t{score:.4f}\t{name}")
