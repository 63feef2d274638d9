"""A webhook: each event's JSON POSTed to a URL (``--webhook URL``), with the standard library's HTTP.

    target = WebhookTarget("https://user:password@example.com/hooks/cosal")
    target.send(event, body, timeout_s=5)    # POST, Content-Type application/json; raises DeliveryError

A user and password in the URL are sent as HTTP Basic authentication and appear nowhere else (the target's
``name`` redacts them). The request carries the event's id in ``X-Streamcosal-Event``: a receiver that
answered too late gets a retry of the same event, which it can recognise by it. Any 2xx answer delivers;
401 and 403 stop the deliveries to this URL (the login will not change during the run); 408, 425, 429,
5xx, timeouts and connection errors are retried; other answers (400, 404, 413...) fail the event at once.
Redirects are not followed (a POST would arrive as a GET without the event, the login sent to another
host): a 3xx fails the event, naming where it points.
"""

from __future__ import annotations

import base64
import http.client
import urllib.error
import urllib.parse
import urllib.request

from streamcosal.io.endpoints import webhook_url
from streamcosal.io.redact import redact
from streamcosal.run.delivery.target import DeliveryError
from streamcosal.run.observers import EventRecord

RETRIED_STATUS = frozenset({408, 425, 429})  # and every 5xx


class _Unredirected(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is an answer (urllib's HTTPError), not a request to make elsewhere."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_NOT_REDIRECTED = urllib.request.build_opener(_Unredirected)


class WebhookTarget:
    """POSTs events to ``url`` (http:// or https://; see the module)."""

    def __init__(self, url: str) -> None:
        self.name = redact(url)
        parts = webhook_url(url)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port else host
        self._url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self._auth = None
        if parts.username is not None:
            login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(login.encode("utf-8")).decode("ascii")
        self._refused: str | None = None

    def open(self, timeout_s: float) -> None:
        """Nothing to connect ahead: each event is one request."""

    def send(self, event: EventRecord, body: bytes, timeout_s: float) -> None:
        """POST ``body``; raise `DeliveryError` unless the answer is 2xx within ``timeout_s`` (per connect and read)."""
        if self._refused is not None:
            raise DeliveryError(self._refused, refused=True)
        headers = {"Content-Type": "application/json", "User-Agent": "streamcosal", "X-Streamcosal-Event": event.id}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with _NOT_REDIRECTED.open(request, timeout=timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as error:
            status = f"HTTP {error.code} {error.reason}"
            if 300 <= error.code < 400:
                raise DeliveryError(f"{status}: the endpoint redirects to {redact(error.headers.get('Location', '?'))}; "
                                    "give that URL as the webhook (redirects are not followed)", retry=False) from None
            if error.code in (401, 403):
                self._refused = f"the endpoint refused the login ({status})"
                raise DeliveryError(self._refused, refused=True) from None
            raise DeliveryError(status, retry=error.code in RETRIED_STATUS or error.code >= 500) from None
        except TimeoutError:
            raise DeliveryError(f"no answer within {timeout_s:g} s") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise DeliveryError(f"no answer within {timeout_s:g} s") from None
            raise DeliveryError(f"cannot connect: {redact(str(error.reason))}") from None
        except (OSError, http.client.HTTPException) as error:
            raise DeliveryError(f"connection failed: {redact(str(error)) or type(error).__name__}") from None

    def close(self) -> None:
        """Nothing held between events."""
