"""Where state and results live: the FAISS consensus store, the Parquet results and events, and
where a run's files lie (``RunLayout``)."""

from .consensus_store import ConsensusStore, GroupState, UnknownGroupError
from .events import Event, detect_events, events_from_results, events_table, read_events, write_events
from .layout import RunLayout
from .masks import decode_mask, decode_prob_png, encode_mask, encode_prob_png, mask_bbox, mask_stats
from .results import FrameResult, ResultWriter, check_run_id, read_results
from .schema import EVENT_SCHEMA, RESULT_SCHEMA, SCHEMA_VERSION

__all__ = [
    "EVENT_SCHEMA",
    "RESULT_SCHEMA",
    "SCHEMA_VERSION",
    "ConsensusStore",
    "Event",
    "FrameResult",
    "GroupState",
    "ResultWriter",
    "RunLayout",
    "UnknownGroupError",
    "check_run_id",
    "decode_mask",
    "decode_prob_png",
    "detect_events",
    "encode_mask",
    "encode_prob_png",
    "events_from_results",
    "events_table",
    "mask_bbox",
    "mask_stats",
    "read_events",
    "read_results",
    "write_events",
]
