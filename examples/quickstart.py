"""Quickstart: the Python API on the bundled example (a cat that recurs beside changing objects).

    python examples/quickstart.py [--weights CHECKPOINT] [--out DIR]

The same from the command line:

    streamcosal video examples/cat.mp4 --out results --overlay
    streamcosal video examples/groups/cat --out results --overlay
    streamcosal search examples/cat.mp4 --store results
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamcosal.inference.engine import CoSalEngine
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.run.search import search
from streamcosal.storage import ConsensusStore, decode_mask, read_events, read_results

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="a streamcosal checkpoint (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=Path("quickstart-results"))
    args = parser.parse_args()

    # 1. The engine: the default GICD (EfficientNet-Lite2), or a checkpoint of yours.
    engine = CoSalEngine.from_checkpoint(args.weights) if args.weights else CoSalEngine.from_pretrained()

    # 2. A video, global mode: the consensus of frames sampled over the whole video, then every
    #    frame segmented against it; results, events and an H.264 overlay under args.out.
    config = PipelineConfig(mode="global", window=8, overlay=True, show_progress=True)
    report = run_pipeline([HERE / "cat.mp4"], args.out, engine, config)
    print(f"{report.frames} frames, {report.frames_per_s:.1f} frames/s; overlay: {report.sources[0].overlay}")

    # 3. An image group (one folder): PNG overlays and a contact sheet.
    report = run_pipeline([HERE / "groups" / "cat"], args.out, engine, PipelineConfig(overlay=True))
    print(f"image group overlays: {report.sources[0].overlay}")

    # 4. The results are plain Parquet: pyarrow, pandas or DuckDB read them without streamcosal.
    table = read_results(args.out)
    first = table.slice(0, 1).to_pylist()[0]
    mask = decode_mask(first)  # [H, W] bool, from the COCO RLE
    print(f"{table.num_rows} rows; first: frame {first['frame_index']} at {first['timestamp']:.2f} s, "
          f"mask {mask.shape} covering {first['area_fraction']:.1%}, box {first['bbox']}")
    per_group = table.group_by("group").aggregate([("frame_index", "count"), ("area_fraction", "mean"), ("similarity", "mean")])
    print(per_group)  # the same with DuckDB: read_parquet('OUT/frames/**/*.parquet', hive_partitioning = true)
    try:
        print(read_events(args.out).select(["source", "start_time", "end_time", "peak_area_fraction"]))
    except FileNotFoundError:
        print("no events: the object never covered enough of a frame for long enough")

    # 5. Which processed videos/groups share the common object of a new clip?
    store = ConsensusStore.open(args.out / "consensus.npz")
    print("nearest groups to cat.mp4:", search(store, str(HERE / "cat.mp4"), engine, k=3))


if __name__ == "__main__":
    main()
