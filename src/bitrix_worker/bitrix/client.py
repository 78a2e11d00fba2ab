"""The only module that speaks HTTP to Bitrix24: one attempt per call, every failure classified.

``BitrixClient`` POSTs JSON to ``<webhook>/<method>`` (or, for an OAuth application, to
``<client_endpoint><method>`` with ``auth`` in the body: ``bitrix/auth.py``) over one pooled
``httpx.AsyncClient`` (HTTP/1.1, no redirects, explicit timeouts). It never retries and never sleeps: the
worker decides what a ``Classification`` means. The one exception is a stale OAuth access token
(``expired_token``): that request ran nothing, so once the token manager has a fresh token the same request
is sent again at once (at most ``MAX_RENEWALS`` times), spending no retry budget. Any failure raises
``BitrixError.for_classification(...)``; per-command errors of a ``batch`` are returned in
``BatchResult.errors``, never raised.

Every request has two bounds beyond httpx's per-phase timeouts (which restart with each byte read, so an
answer trickling in one byte every few seconds never times out): an overall deadline (``request_deadline_s``,
just above the portal's 60 s cut-off) after which the attempt is a ``network`` / ``ambiguous`` failure like a
read timeout, and a size cap (``max_response_bytes``): the body is streamed and reading stops as soon as it
(or its ``Content-Length``) passes the cap, the connection is dropped, and the attempt is classified as the
same status with a garbled body would be (``server_error`` / ``ambiguous`` on 2xx). So memory per request is
bounded by the cap, whatever the portal or a proxy in between sends.

The webhook secret is a bearer credential and httpx puts the URL into its exceptions (``exc.request.url``)
and its INFO log line. So httpx exceptions are *not* chained: the ``BitrixError`` is raised outside the
``except`` block (no ``__cause__``, no ``__context__``) and keeps only the exception type name and a
redacted message in its classification. The ``httpx`` logger gets a filter that redacts webhook paths.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx

from ..classify import classify_response, classify_transport, decode_answer, parse_time
from ..defaults import DESCRIPTION_MAX_CHARS, MAX_RESPONSE_BYTES, REQUEST_DEADLINE_S
from ..errors import BitrixError
from ..redaction import WebhookUrl, redact
from ..taxonomy import Classification, ErrorClass, Execution, TimeInfo
from . import methods as m
from .auth import STALE_CODES, Credentials, RequestAuth, WebhookAuth
from .methods import BatchResult, Command, ListPage

__all__ = ["BitrixClient", "CallResult"]

try:
    _VERSION = version("bitrix-worker")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    _VERSION = "0"

DEFAULT_USER_AGENT: Final = f"bitrix-worker/{_VERSION}"

#: httpx exceptions raised before any byte of the request left: resending duplicates nothing.
_NOT_SENT: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
)

_T = TypeVar("_T")
MAX_PARSED_URLS: Final = 64
"""Method URLs kept parsed per client (a worker calls a handful of methods)."""
MAX_RENEWALS: Final = 2
"""Fresh-token resends of one call: a token can go stale again while the resend is in flight (another
process refreshed), but a portal that keeps refusing new tokens is an auth failure, not a loop."""


class _TooLarge(Exception):
    """The answer passed the size cap; carries what classification needs, never the body."""

    def __init__(self, status: int, headers: httpx.Headers, seen: int, declared: bool) -> None:
        super().__init__(status)
        self.status, self.headers, self.seen, self.declared = status, headers, seen, declared


def _too_large(big: _TooLarge, cap: int, secrets: tuple[str, ...]) -> Classification:
    """Classified like the same status with a garbled body: 2xx -> server_error / ambiguous."""
    like = classify_response(big.status, b"", headers=big.headers, secrets=secrets)
    size = f"Content-Length {big.seen}" if big.declared else f"more than {big.seen} bytes"
    description = f"answer too large: {size}, over the {cap}-byte cap; not read"
    if like is None:  # pragma: no cover - an empty body is never a success
        like = Classification(ErrorClass.SERVER_ERROR, Execution.AMBIGUOUS, big.status)
    return dataclasses.replace(like, description=description)


def _not_renewed(c: Classification, note: str, transient: bool) -> Classification:
    """The stale-token refusal, explained; a refresh that could not be attempted (token endpoint or registry
    unreachable) is a not-executed network failure: nothing ran, try again later."""
    description = f"{c.description}; {note}" if note else c.description
    if transient:
        return Classification(
            ErrorClass.NETWORK, Execution.NOT_EXECUTED, c.http_status, c.bitrix_code, description
        )
    return dataclasses.replace(c, description=description[:DESCRIPTION_MAX_CHARS])


def _deadline_passed(deadline_s: float) -> Classification:
    """Like a read timeout: the request was sent and may have run."""
    return Classification(
        ErrorClass.NETWORK,
        Execution.AMBIGUOUS,
        description=f"RequestDeadline: no complete answer within {deadline_s:g} s",
    )


class _RedactWebhookPaths(logging.Filter):
    """httpx logs ``HTTP Request: POST https://portal/rest/1/<secret>/crm.deal.add`` at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactWebhookPaths) for f in logger.filters):
            logger.addFilter(_RedactWebhookPaths())


_install_log_filter()


@dataclass(frozen=True, slots=True)
class CallResult:
    """A successful answer: ``result`` plus the ``time`` block and list paging."""

    result: Any
    time: TimeInfo | None
    total: int | None
    next: int | None
    http_status: int
    elapsed_s: float


class BitrixClient:
    """One portal's HTTP client (a webhook, or any ``RequestAuth``). Use as ``async with BitrixClient(...) as
    client`` or call ``aclose()``."""

    def __init__(
        self,
        webhook: WebhookUrl | RequestAuth,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_connections: int = 100,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._auth: RequestAuth = WebhookAuth(webhook) if isinstance(webhook, WebhookUrl) else webhook
        self._deadline_s = request_deadline_s
        self._max_bytes = max_response_bytes
        self._urls: dict[str, httpx.URL] = {}  # parsed once: httpx parses a str URL anew for every request
        self._transport = transport  # given: requests go to it directly (``_open``)
        self._http = httpx.AsyncClient(
            http1=True,
            http2=False,
            follow_redirects=False,
            timeout=httpx.Timeout(
                connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=connect_timeout_s
            ),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": user_agent,
            },
        )
        self._timeouts = self._http.timeout.as_dict()

    @property
    def webhook(self) -> WebhookUrl | None:
        return self._auth.webhook if isinstance(self._auth, WebhookAuth) else None

    @property
    def auth(self) -> RequestAuth:
        return self._auth

    @property
    def portal(self) -> str:
        return self._auth.portal

    @property
    def _secrets(self) -> tuple[str, ...]:
        return self._auth.secrets()

    def __repr__(self) -> str:
        return f"BitrixClient({self._auth!r})"

    async def __aenter__(self) -> BitrixClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- the one HTTP attempt ---------------------------------------------------------------------------

    def _error(self, classification: Classification, method: str) -> BitrixError:
        return BitrixError.for_classification(classification, method)

    def _unexpected(self, method: str, problem: str, status: int | None) -> BitrixError:
        """A 2xx answer whose shape Bitrix24 never sends: it may have run (like ERROR_UNEXPECTED_ANSWER)."""
        return self._error(
            Classification(
                ErrorClass.SERVER_ERROR,
                Execution.AMBIGUOUS,
                http_status=status,
                description=redact(f"unexpected answer: {problem}", self._secrets)[:DESCRIPTION_MAX_CHARS],
            ),
            method,
        )

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CallResult:
        """One POST; raises ``BitrixError`` (never an httpx exception) on any failure.

        A stale OAuth token is renewed and the request sent again (see the module docstring)."""
        plain = dict(params or {})
        renewals = 0
        while True:
            creds = await self._auth.credentials()
            status, headers, body, elapsed = await self._attempt(method, plain, creds)
            decoded = decode_answer(body)  # once: classifying and reading the result share it
            classification = classify_response(
                status, body, headers=headers, secrets=self._secrets, decoded=decoded
            )
            if classification is None:
                break
            code = (classification.bitrix_code or "").upper()
            if code not in STALE_CODES or classification.error_class is not ErrorClass.AUTH:
                raise self._error(classification, method)
            if renewals >= MAX_RENEWALS:
                raise self._error(classification, method)
            renewal = await self._auth.renew(creds, code)
            if not renewal.resend:
                raise self._error(_not_renewed(classification, renewal.note, renewal.transient), method)
            renewals += 1
        data = decoded[1]  # classify_response guarantees a JSON object here
        return CallResult(
            result=data.get("result"),
            time=parse_time(data.get("time")),
            total=m.int_or_none(data.get("total")),
            next=m.int_or_none(data.get("next")),
            http_status=status,
            elapsed_s=elapsed,
        )

    async def _attempt(
        self, method: str, params: dict[str, Any], creds: Credentials
    ) -> tuple[int, httpx.Headers, bytes, float]:
        """Send once; transport failures raise ``BitrixError``, any answer is returned to classify."""
        try:
            payload = {**params, **creds.params} if creds.params else params
            content = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            problem = f"params are not JSON-serialisable: {type(exc).__name__}: {exc}"
            raise self._error(
                Classification(
                    ErrorClass.INVALID_DATA,
                    Execution.NOT_EXECUTED,
                    description=redact(problem, self._secrets)[:DESCRIPTION_MAX_CHARS],
                ),
                method,
            ) from None

        started = time.monotonic()
        failure: Classification | None = None
        try:
            async with asyncio.timeout(self._deadline_s):
                status, headers, body = await self._exchange(self._auth.method_url(method), content)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            failure = classify_transport(exc, sent=not isinstance(exc, _NOT_SENT), secrets=self._secrets)
        except TimeoutError:
            failure = _deadline_passed(self._deadline_s)
        except _TooLarge as big:
            failure = _too_large(big, self._max_bytes, self._secrets)
        if failure is not None:
            # Raised outside the except block: no __cause__/__context__ carrying the URL.
            raise self._error(failure, method)
        return status, headers, body, time.monotonic() - started

    async def _exchange(self, url: str, content: bytes) -> tuple[int, httpx.Headers, bytes]:
        """POST and read the answer, streamed: at most ``max_response_bytes`` are ever held.

        Leaving early (cap passed, deadline cancelled) closes the response, and httpcore drops a connection
        whose answer was not read to the end, so the rest is never received.
        """
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= MAX_PARSED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        response = await self._open(parsed, content)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise _TooLarge(response.status_code, response.headers, int(declared), declared=True)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise _TooLarge(response.status_code, response.headers, self._max_bytes, declared=False)
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)
        finally:
            await response.aclose()

    async def _open(self, url: httpx.URL, content: bytes) -> httpx.Response:
        """Send the request; the answer's status and headers are read, its body not yet. Given a transport
        (the worker's ``marking_transport``), the request goes to it as ``AsyncClient.send`` would pass it
        (the client's headers, cookies, timeouts; no redirects), without the client's auth/redirect/hook
        layers: ~10% of a batch's HTTP work. Else httpx's client sends it (it picks environment proxies)."""
        http = self._http
        if self._transport is None:
            return await http.send(http.build_request("POST", url, content=content), stream=True)
        if http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        cookies = http.cookies
        request = httpx.Request(
            "POST",
            url,
            headers=http.headers,
            cookies=cookies,
            content=content,
            extensions={"timeout": self._timeouts},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers:
            cookies.extract_cookies(response)
        return response

    async def _run(self, command: Command, parse: Callable[[CallResult], _T]) -> _T:
        result = await self.call(command.method, command.params)
        try:
            return parse(result)
        except ValueError as exc:
            raise self._unexpected(command.method, str(exc), result.http_status) from None

    # ---- CRM convenience --------------------------------------------------------------------------------

    async def add(
        self, entity: str, fields: Mapping[str, Any], params: Mapping[str, Any] | None = None
    ) -> int:
        """``crm.<entity>.add``; the new id."""
        return await self._run(m.crm_add(entity, fields, params), lambda r: m.parse_id(r.result))

    async def update(
        self,
        entity: str,
        ident: int | str,
        fields: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
    ) -> bool:
        return await self._run(m.crm_update(entity, ident, fields, params), lambda r: m.parse_bool(r.result))

    async def get(self, entity: str, ident: int | str) -> dict[str, Any]:
        return await self._run(m.crm_get(entity, ident), lambda r: m.parse_item(r.result))

    async def delete(self, entity: str, ident: int | str) -> bool:
        return await self._run(m.crm_delete(entity, ident), lambda r: m.parse_bool(r.result))

    async def fields(self, entity: str) -> dict[str, Any]:
        """``crm.<entity>.fields``: the field descriptions (to validate field names at start)."""
        return await self._run(m.crm_fields(entity), lambda r: m.parse_item(r.result))

    async def list(
        self,
        entity: str,
        *,
        filter: Mapping[str, Any] | None = None,  # the Bitrix24 parameter name
        select: Iterable[str] | None = None,
        order: Mapping[str, str] | None = None,
        start: int | None = None,
    ) -> ListPage:
        """One page (≤ 50 items) of ``crm.<entity>.list``; pass ``page.next`` as ``start`` for the next."""
        command = m.crm_list(entity, filter=filter, select=select, order=order, start=start)
        return await self._run(command, lambda r: m.parse_list(r.result, r.total, r.next))

    # ---- batch ------------------------------------------------------------------------------------------

    async def batch(self, commands: Mapping[str, Command], *, halt: bool = False) -> BatchResult:
        """Up to 50 named commands in one request (ValueError for more, before any I/O).

        A failure of the whole request raises ``BitrixError`` like ``call``; per-command failures are in
        ``errors`` (classified), and commands that ``halt`` skipped are in ``not_run``.
        """
        request = m.build_batch(commands, halt=halt)
        names = tuple(commands)
        return await self._run(
            request, lambda r: m.parse_batch(r.result, names, time=r.time, secrets=self._secrets)
        )
