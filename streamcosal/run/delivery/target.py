"""What an event is delivered to: a `Target` (a webhook, an MQTT broker), and how a delivery fails."""

from __future__ import annotations

from typing import Protocol

from streamcosal.run.observers import EventRecord


class DeliveryError(Exception):
    """A delivery failed. ``reason``: for the report and the log (no password); ``retry``: whether trying
    again may help (a timeout, a refused connection, HTTP 5xx) or not (HTTP 400, a payload too large);
    ``refused``: the endpoint refused the login, so no later event is tried either."""

    def __init__(self, reason: str, retry: bool = True, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.retry, self.refused = reason, retry and not refused, refused


class Target(Protocol):
    """An endpoint. ``name``: its URL with the password redacted, what reports and logs show."""

    name: str

    def open(self, timeout_s: float) -> None:
        """Connect ahead of the first event where that means something (a broker); raise `DeliveryError`."""

    def send(self, event: EventRecord, body: bytes, timeout_s: float) -> None:
        """Deliver one event's JSON ``body`` (``payload.event_payload``) within about ``timeout_s``, or raise
        `DeliveryError`."""

    def close(self) -> None:
        """Disconnect; never raises."""
