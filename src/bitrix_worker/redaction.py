"""Keeping the webhook secret out of every string we emit.

The webhook URL ``https://portal/rest/<user>/<secret>/`` is a bearer credential. It is held as
``WebhookUrl`` whose ``str``/``repr`` are redacted; anything else that might echo it (exception text,
response bodies, logs) goes through ``redact`` with the known secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REDACTED = "***"
_WEBHOOK_PATH = re.compile(r"(/rest/(?:api/)?\d+/)([^/?#\s]+)")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Hide known secrets and anything shaped like a webhook secret in a URL path."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _WEBHOOK_PATH.sub(lambda m: m.group(1) + REDACTED, text)


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """An inbound-webhook base URL; prints as ``https://portal/rest/1/***/``."""

    _url: str = field(repr=False)

    def __post_init__(self) -> None:
        url = self._url if self._url.endswith("/") else self._url + "/"
        object.__setattr__(self, "_url", url)

    @classmethod
    def parse(cls, url: str) -> WebhookUrl:
        """Validate the shape; raises ValueError with a redacted message."""
        parts = urlsplit(url.strip())
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {redact(url)}")
        segments = [s for s in parts.path.split("/") if s]
        if segments[:1] == ["rest"] and segments[1:2] == ["api"]:
            segments = ["rest", *segments[2:]]
        if len(segments) != 3 or segments[0] != "rest" or not segments[1].isdigit():
            raise ValueError("expected https://<portal>/rest/<user_id>/<secret>/, got " + redact(url))
        return cls(f"{parts.scheme}://{parts.netloc}{parts.path}")

    @property
    def secret(self) -> str:
        return [s for s in urlsplit(self._url).path.split("/") if s][-1]

    @property
    def portal(self) -> str:
        """Host name: the rate limit, breaker and method pauses are per portal."""
        return urlsplit(self._url).netloc

    def reveal(self) -> str:
        """The real URL, for the HTTP client only."""
        return self._url

    def method_url(self, method: str) -> str:
        return f"{self._url}{method}"

    def __str__(self) -> str:
        return redact(self._url, [self.secret])

    def __repr__(self) -> str:
        return f"WebhookUrl({self})"
