"""The URLs that events are delivered to (``--webhook``, ``--mqtt``), checked once for both the
options (when they are read, not at the first event hours into a camera run) and the delivery
targets a library user builds directly. Each message names the URL with its password redacted."""

from __future__ import annotations

import urllib.parse

from streamcosal.io.redact import redact

WEBHOOK_FORM = "an http:// or https:// URL"
BROKER_FORM = "mqtt://[USER:PASSWORD@]HOST[:PORT][/PREFIX] (mqtts:// for TLS)"


def webhook_url(url: str) -> urllib.parse.SplitResult:
    """``url`` split; ValueError where it is not http(s), names no host, has a port that is not one (a
    word, past 65535) or a broken IPv6 address."""
    return _split(url, ("http", "https"), f"is not a webhook: give {WEBHOOK_FORM}")


def broker_url(url: str) -> urllib.parse.SplitResult:
    """``url`` split, as `webhook_url` for mqtt:// and mqtts://; a topic prefix holding MQTT's wildcards
    (+ or #: a published topic is exact) is refused too."""
    parts = _split(url, ("mqtt", "mqtts"), f"is not a broker: give {BROKER_FORM}")
    if "+" in parts.path or parts.fragment or url.endswith("#"):  # "#" starts a URL's fragment
        raise ValueError(f"{redact(url)}: a topic prefix cannot hold MQTT's wildcards + and # (a published topic "
                         "is exact); give one without them")
    return parts


def _split(url: str, schemes: tuple[str, ...], problem: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it
    except ValueError as error:  # "Port out of range 0-65535", "Invalid IPv6 URL", a port that is a word
        raise ValueError(f"{redact(url)} {problem} ({redact(str(error))})") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{redact(url)} {problem}")
    return parts
