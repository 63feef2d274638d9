"""Event delivery: each final event, as JSON with a JPEG snapshot of its peak frame (and optionally an
MP4 clip), to webhooks (HTTP POST) and an MQTT broker, each in a thread of its own with a bounded queue,
timeouts and bounded retries; what did not arrive is listed in the run report (docs/delivery.md).

- `worker`: `Delivery` (the observer a run gets for ``--webhook``/``--mqtt``) and `DeliveryPolicy`;
- `target`: what an endpoint is (`Target`) and how a delivery fails (`DeliveryError`);
- `webhook`, `mqtt`: the two endpoints; `payload`: the JSON; `snapshot`: the JPEG and the clip.
"""

from streamcosal.run.delivery.worker import Delivery, DeliveryPolicy

__all__ = ["Delivery", "DeliveryPolicy"]
