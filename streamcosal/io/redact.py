"""Passwords out of URLs before they reach a log, a report or a file."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)


_URL_AUTHORITY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/?#]*)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd|pass)=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` (a URL, or a message quoting one) with each password of a URL replaced by ***:
    rtsp://user:***@host/path, http://host/video?user=u&pwd=***. A stream is named this way in
    everything stored or shown (result rows, reports, metric labels, messages, logs); only the
    connection uses the real URL. The login ends at the authority's last @ and the user name at its
    first colon, as for urllib and FFmpeg, so a password may hold @, quotes and colons."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_AUTHORITY.sub(_without_password, text))


def _without_password(url: re.Match[str]) -> str:
    scheme, authority = url.groups()
    login, at, host = authority.rpartition("@")
    if not at or ":" not in login:
        return url.group(0)
    return f"{scheme}{login.partition(':')[0]}:***@{host}"


# ----------------------------------------------------------------------------- image groups
