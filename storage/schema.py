"""The Parquet schemas of streamcosal's results: one place, one version number.

Layout on disk (``root`` is what the user passes to the writers and readers)::

    root/frames/source_key=<slug>-<hash>/<run_id>.<seq>.parquet   one row per processed frame
    root/events/source_key=<slug>-<hash>/<run_id>.events-<hex>.parquet   one row per detected event

Every file carries ``SCHEMA_VERSION`` in its Arrow schema metadata; frames files also carry the
model that made them (``MODEL_KEY``: JSON with name, version, precision and device). Change a schema here, bump
the version, and the readers refuse files of versions not in ``READABLE_VERSIONS`` with a message
that says so (version 2 added the nullable ``latency_s``; version 1 files read it as null).
"""

import pyarrow as pa

SCHEMA_VERSION = 2
READABLE_VERSIONS = ("1", "2")  # version 1 has no latency_s: read as null

# Keys of the Arrow schema metadata stored in every file we write.
SCHEMA_NAME_KEY = b"streamcosal.schema"
SCHEMA_VERSION_KEY = b"streamcosal.schema_version"
MODEL_KEY = b"streamcosal.model"

# COCO run-length encoding as written by ``pycocotools.mask.encode``: size = [height, width],
# counts = the compressed RLE string (bytes).
MASK_RLE_TYPE = pa.struct(
    [
        pa.field("size", pa.list_(pa.int32(), 2), nullable=False),
        pa.field("counts", pa.binary(), nullable=False),
    ]
)

# Bounding box of the mask in pixels of the original frame: x, y, width, height (COCO order).
BBOX_TYPE = pa.list_(pa.int32(), 4)


def _versioned(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={SCHEMA_NAME_KEY: name.encode(), SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
    )


RESULT_SCHEMA = _versioned(
    "frames",
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # file path, stream URL or camera name
        pa.field("group", pa.string(), nullable=False),  # group or track name
        pa.field("window", pa.int64(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),  # seconds
        pa.field("height", pa.int32(), nullable=False),  # of the original frame
        pa.field("width", pa.int32(), nullable=False),
        pa.field("mask_rle", MASK_RLE_TYPE, nullable=False),
        pa.field("bbox", BBOX_TYPE, nullable=True),  # null when the mask is empty
        pa.field("area_fraction", pa.float32(), nullable=False),
        pa.field("mean_prob", pa.float32(), nullable=False),  # mean probability inside the mask
        pa.field("similarity", pa.float32(), nullable=False),  # GIM: consensus . own logits
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("prob_png", pa.binary(), nullable=True),  # small 8-bit probability map, PNG
        # live sources: seconds from the frame's capture (decoded by its reader) to its row; null otherwise
        pa.field("latency_s", pa.float32(), nullable=True),
    ],
)

EVENT_SCHEMA = _versioned(
    "events",
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),
        pa.field("start_time", pa.float64(), nullable=False),
        pa.field("end_time", pa.float64(), nullable=False),
        pa.field("duration", pa.float64(), nullable=False),  # end_time - start_time, seconds
        pa.field("peak_area_fraction", pa.float32(), nullable=False),
        pa.field("mean_area_fraction", pa.float32(), nullable=False),
        pa.field("n_frames", pa.int64(), nullable=False),
    ],
)
