"""MQTT: each event's JSON published to a broker (``--mqtt URL``) with paho-mqtt, QoS 1.

    target = MqttTarget("mqtt://user:password@broker:1883/site1")
    target.open(timeout_s=5)                 # connect (in the delivery thread); raises DeliveryError
    target.send(event, body, timeout_s=5)    # publish to site1/<group>/<source key>/events, wait for PUBACK

URL: ``mqtt://[USER:PASSWORD@]HOST[:PORT][/PREFIX]`` (port 1883), or ``mqtts://`` for TLS with the
system's certificate authorities (port 8883). The topic is ``PREFIX/<group>/<source key>/events``,
PREFIX ``streamcosal`` by default, the source key being the source's results folder name
(``storage.parquet_files.source_key``: a slug of the source and 12 hex digits, no password, no ``/``);
``/``, ``+`` and ``#`` in a group's name become ``_``. The snapshot (and clip) travel base64 in the JSON
(``payload``), so a message is the whole event. A broker that refuses the login (bad user name or
password, not authorised) gets no further try in the run; a lost connection is opened again at the next
event. Needs the ``mqtt`` extra (paho-mqtt).
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
import uuid
from typing import Any

from streamcosal.io.endpoints import broker_url
from streamcosal.io.redact import redact
from streamcosal.run.delivery.target import DeliveryError
from streamcosal.run.observers import EventRecord
from streamcosal.storage.parquet_files import source_key

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "streamcosal"
LOGIN_REFUSED = frozenset({0x86, 0x87})  # CONNACK: bad user name or password, not authorised (MQTT 3.1.1's 4 and 5)


def topic_part(name: str) -> str:
    """``name`` as one level of a topic: ``/``, ``+``, ``#`` and NUL replaced by ``_``."""
    return re.sub(r"[/+#\x00]", "_", name) or "_"


class MqttTarget:
    """Publishes events to the broker of ``url`` (see the module)."""

    def __init__(self, url: str) -> None:
        parts = broker_url(url)
        self.name = redact(url)
        try:
            import paho.mqtt.client  # noqa: F401 - checked here, before the run starts
        except ImportError:
            raise ValueError("--mqtt needs paho-mqtt: pip install 'streamcosal[mqtt]'") from None
        self.tls = parts.scheme == "mqtts"
        self.host, self.port = parts.hostname, parts.port or (8883 if self.tls else 1883)
        self.prefix = parts.path.strip("/") or DEFAULT_PREFIX
        self._user = urllib.parse.unquote(parts.username) if parts.username is not None else None
        self._password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        self._client: Any = None  # a connected paho Client
        self._connected = threading.Event()
        self._refused: str | None = None

    def topic(self, event: EventRecord) -> str:
        """``PREFIX/<group>/<source key>/events``."""
        return f"{self.prefix}/{topic_part(event.group)}/{source_key(event.source)}/events"

    def open(self, timeout_s: float) -> None:
        """Connect, unless connected; `DeliveryError` when the broker cannot be reached or refuses."""
        if self._refused is not None:
            raise DeliveryError(self._refused, refused=True)
        if self._client is not None and self._connected.is_set():
            return
        self.close()
        from paho.mqtt import client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamcosal-{uuid.uuid4().hex[:12]}",
                             protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        if self._user is not None:
            client.username_pw_set(self._user, self._password)
        if self.tls:
            client.tls_set()
        client.connect_timeout = timeout_s
        answered, reasons = threading.Event(), []

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            reasons.append(reason)
            if not reason.is_failure:
                self._connected.set()
            answered.set()

        def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            self._connected.clear()

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        try:
            client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as error:
            raise DeliveryError(f"cannot connect to the broker: {redact(str(error)) or type(error).__name__}") from None
        client.loop_start()
        self._client = client
        if not answered.wait(timeout_s):
            self.close()
            raise DeliveryError(f"no answer from the broker within {timeout_s:g} s")
        if reasons[0].is_failure:
            self.close()
            if reasons[0].value in LOGIN_REFUSED:
                self._refused = f"the broker refused the login ({reasons[0]})"
                raise DeliveryError(self._refused, refused=True)
            raise DeliveryError(f"the broker refused the connection ({reasons[0]})")

    def send(self, event: EventRecord, body: bytes, timeout_s: float) -> None:
        """Publish ``body`` with QoS 1 and wait for the broker's acknowledgement (at most ``timeout_s``)."""
        self.open(timeout_s)
        try:
            info = self._client.publish(self.topic(event), body, qos=1)
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError, OSError) as error:
            self.close()
            raise DeliveryError(f"publishing failed: {redact(str(error))}") from None
        if not info.is_published():
            self.close()
            raise DeliveryError(f"the broker did not acknowledge within {timeout_s:g} s")

    def close(self) -> None:
        """Disconnect and stop paho's network thread; never raises."""
        client, self._client = self._client, None
        self._connected.clear()
        if client is not None:
            try:
                client.disconnect()
                client.loop_stop()
            except Exception as error:  # noqa: BLE001 - closing what may be half open
                logger.debug("%s: closing: %s", self.name, redact(str(error)))
