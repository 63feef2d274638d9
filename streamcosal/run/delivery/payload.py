"""The message an event is delivered as: one JSON object (UTF-8), the same for webhooks and MQTT.

    {"version": 1, "id": "<run_id>:<source key>:<start frame>", "run_id": ..., "source": ..., "group": ...,
     "start_frame": ..., "end_frame": ..., "start_time": ..., "end_time": ..., "duration": ...,
     "peak_area_fraction": ..., "mean_area_fraction": ..., "n_frames": ...,
     "peak_frame": ..., "peak_time": ..., "width": W, "height": H,
     "snapshot": {"content_type": "image/jpeg", "width": W, "height": H, "base64": "..."} or null,
     "clip": {"content_type": "video/mp4", "frames": N, "base64": "..."} or null}

Times in seconds from the source's first frame, frames as the source indexes them (the fields of the
stored events, ``storage.events.Event``); the source is named with its password redacted, as in the
results.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict

from streamcosal.io.redact import redact
from streamcosal.run.delivery.snapshot import clip_mp4, snapshot_jpeg
from streamcosal.run.observers import EventRecord

PAYLOAD_VERSION = 1


def event_payload(event: EventRecord, snapshot: bool = True, clip: bool = False) -> bytes:
    """The JSON of ``event`` (see the module); ``snapshot``: with the peak frame's JPEG, ``clip``: with the
    MP4 of ``event.clip`` (null when it has no frames)."""
    height, width = event.peak_image.shape[:2]
    body: dict[str, object] = {
        "version": PAYLOAD_VERSION, "id": event.id, "run_id": event.run_id, "source": redact(event.source),
        "group": event.group, **asdict(event.event), "peak_frame": event.peak_frame_index,
        "peak_time": event.peak_timestamp, "width": width, "height": height, "snapshot": None, "clip": None,
    }
    if snapshot:
        body["snapshot"] = {"content_type": "image/jpeg", "width": width, "height": height,
                            "base64": _b64(snapshot_jpeg(event.peak_image, event.peak_mask))}
    if clip and event.clip:
        body["clip"] = {"content_type": "video/mp4", "frames": len(event.clip), "base64": _b64(clip_mp4(event.clip))}
    return json.dumps(body).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
