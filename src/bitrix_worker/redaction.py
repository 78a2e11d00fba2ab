"""Keeping secrets out of every string we emit: the webhook secret, URL passwords and URL tokens.

The webhook URL ``https://portal/rest/<user>/<secret>/`` is a bearer credential. It is held as
``WebhookUrl`` whose ``str``/``repr`` are redacted. Two functions cover everything else:

* ``redact_url(url)`` for a URL we *show* (config output, config errors, connection errors): it parses the
  URL and masks exactly its secret-bearing parts, whatever its shape — the userinfo password, the webhook
  secret path segment (also in a mistyped URL such as ``/REST/1/…``, ``/rest/admin/…``, ``/rst/1/…``), and
  the values of token-like query or fragment parameters (``auth=``, ``access_token=``, ``password=`` …).
  Host, port, the rest of the path and the parameter names stay visible, so a typo can be seen.
* ``redact(text, secrets)`` for free text (exception messages, response bodies, log lines): the same masks
  applied to every URL-looking piece of the text, plus the known secrets wherever they stand as a token.

A known secret of eight characters or more is removed wherever it occurs, even inside a longer token (a
percent-encoded URL); a shorter one only where it stands alone, so a one-character secret cannot mangle a
logger name. Real webhook secrets are 16 characters; a short one is only ever a test's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["HOST_PATTERN", "REDACTED", "WebhookUrl", "redact", "redact_url"]

REDACTED = "***"

#: A known secret at least this long is removed as a substring; a shorter one only as a whole token.
SUBSTRING_MIN_CHARS = 8

#: Schemes whose path is a database number, a database name or a file: shown as is.
_STORAGE_SCHEMES = ("redis", "rediss", "valkey", "unix", "postgres", "postgresql", "sqlite", "mysql")

#: Query/fragment parameter names whose value is a credential (matched as a substring, any case).
_TOKEN_NAMES = ("auth", "token", "secret", "pass", "pwd", "key", "sig", "session", "sessid", "credential")

_DIGITS_SHOWN = re.compile(r"\d{1,9}")  # a user id or a database number
_WORD_SHOWN = re.compile(r"[A-Za-z]{1,6}")  # rest, REST, rst, api, admin: what a typo looks like
#: crm.deal.add, crm.item.list.json, portal.bitrix24.ru: dotted names whose parts are too short for a secret.
_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,11}(?:\.[A-Za-z][A-Za-z0-9_]{0,11})+")
_ANCHORS = frozenset({"rest", "api"})

# Free text: a URL's userinfo password, a token-like parameter, and a webhook path of any common shape.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#\"']*:)([^\s/?#\"'<>]+)(@)")
_PARAM = re.compile(r"([?&#;]([^\s=&#;]*)=)([^\s&#;\"'<>]+)")
_WEBHOOK_PATH = re.compile(r"(/re?s?t?/(?:api/)?[A-Za-z0-9_-]{1,32}/)([^/?#\s\"'<>]+)", re.IGNORECASE)
_LONG_AFTER_REST = re.compile(r"(/re?s?t?/(?:api/)?)([A-Za-z0-9_-]{13,})", re.IGNORECASE)


def _token_named(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _TOKEN_NAMES)


def _mask_params(text: str, sep: str) -> str:
    """``a=1&auth=xyz`` -> ``a=1&auth=***``; a bare token without ``=`` (``#xyz``) is masked whole."""
    if not text:
        return text
    out = []
    for item in text.split(sep):
        name, eq, value = item.partition("=")
        if not eq:
            out.append(item if _DIGITS_SHOWN.fullmatch(item) else REDACTED)
        else:
            out.append(f"{name}={REDACTED}" if value and _token_named(name) else item)
    return sep.join(out)


def _mask_path(path: str) -> str:
    """Mask the segments of a webhook-like path that can be the secret; keep the ones that cannot.

    Always masked: the segment right after the first all-digit segment (the secret's place in
    ``/rest/<user>/<secret>/``) and the last segment that is not a method name (where the secret ends up in
    a path missing its user id or with a mistyped prefix). Any other segment is shown only when it plainly
    is not a credential: ``rest``/``api``, a short number, a short word, or a dotted method name.
    """
    parts = path.split("/")
    real = [i for i, s in enumerate(parts) if s]
    masked: set[int] = set()
    digits = [i for i in real if _DIGITS_SHOWN.fullmatch(parts[i])]
    if digits:
        after = [i for i in real if i > digits[0]]
        if after:
            masked.add(after[0])
    tail = [i for i in real if not _METHOD.fullmatch(parts[i]) and parts[i].lower() not in _ANCHORS]
    if tail:
        masked.add(tail[-1])
    for i in real:
        segment = parts[i]
        if segment.lower() in _ANCHORS and i not in masked:
            continue
        plain = any(p.fullmatch(segment) for p in (_DIGITS_SHOWN, _WORD_SHOWN, _METHOD))
        if i in masked or not plain:
            parts[i] = REDACTED
    return "/".join(parts)


def redact_url(url: str) -> str:
    """The URL with its secret-bearing parts masked and everything else kept (see the module docstring)."""
    text = url.strip()
    if "://" not in text and not text.startswith("//"):
        text = "//" + text  # ``portal.bitrix24.ru/rest/1/x/``: read the first part as the host
        prefix_added = True
    else:
        prefix_added = False
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: nothing can be trusted, show no detail
        return REDACTED
    storage = parts.scheme.lower().startswith(_STORAGE_SCHEMES)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if not storage:  # ``https://<token>@host``: on the web a bare user part is a credential too
            netloc = f"{REDACTED}@{hostport}"
        else:
            netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{userinfo}@{hostport}"
    if prefix_added and not (_METHOD.fullmatch(netloc) or _HOST_LITERAL.fullmatch(netloc)):
        netloc = REDACTED  # ``abcdef0123456789`` pasted alone is not a host to show
    path = parts.path if storage else _mask_path(parts.path)
    query = _mask_params(parts.query, "&")
    fragment = _mask_params(parts.fragment, "&")
    shown = f"{parts.scheme}://" if parts.scheme else ("" if prefix_added else "//")
    shown += netloc + path
    if query or "?" in text:
        shown += "?" + query
    if fragment or "#" in text:
        shown += "#" + fragment
    return shown


def _mask_secret(text: str, secret: str) -> str:
    if len(secret) >= SUBSTRING_MIN_CHARS:
        return text.replace(secret, REDACTED)
    alone = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
    return alone.sub(REDACTED, text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text with known secrets and every URL password, token parameter and webhook secret masked.

    Every pattern below needs a ``/`` (a URL, a webhook path) or a ``=`` (a parameter) to match, so text
    with neither is done after the known secrets: most of what is logged (keys, ids, reasons, a rendered
    line of them), which is redacted per operation.
    """
    for secret in secrets:
        if secret:
            text = _mask_secret(text, secret)
    if "/" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    text = _PARAM.sub(lambda m: m.group(1) + REDACTED if _token_named(m.group(2)) else m.group(0), text)
    text = _LONG_AFTER_REST.sub(lambda m: m.group(1) + REDACTED, text)
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
        """Validate the shape; raises ValueError with a message that shows the URL with its secret masked."""
        shown = redact_url(url)
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port (expected 1-65535) in {shown}") from None
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {shown}")
        host = parts.hostname or ""
        if not HOST_PATTERN.fullmatch(host):
            raise ValueError(f"bad host name in {shown}")
        if port == 0:
            raise ValueError(f"bad port (expected 1-65535) in {shown}")
        if parts.query or parts.fragment:
            raise ValueError(f"expected no query or fragment, got {shown}")
        segments = [s for s in parts.path.split("/") if s]
        if segments[:1] == ["rest"] and segments[1:2] == ["api"]:
            segments = ["rest", *segments[2:]]
        if len(segments) != 3 or segments[0] != "rest" or not segments[1].isdigit():
            raise ValueError(f"expected https://<portal>/rest/<user_id>/<secret>/, got {shown}")
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
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"WebhookUrl({self})"


_HOST_LITERAL = re.compile(r"localhost(?::\d+)?|[0-9.:\[\]]+")

#: A DNS name (letters of any script, digits, ``-``, ``_``, dots) or an IPv4/IPv6 literal; no spaces.
HOST_PATTERN = re.compile(r"[\w.-]{1,253}|[0-9A-Fa-f:.]{2,45}")
