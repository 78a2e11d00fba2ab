"""The webhook secret never appears in an exception, its chain, a classification, the client's repr or logs.

The HTTP paths run against the emulator over loopback (httpx puts the full URL into its exceptions and its
INFO log line, which is exactly what must not escape).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from bitrix_worker.bitrix import BitrixClient
from bitrix_worker.bitrix import methods as m
from bitrix_worker.classify import classify_command_error, classify_response, classify_transport
from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer, FaultConfig
from bitrix_worker.errors import BitrixError
from bitrix_worker.redaction import WebhookUrl

SECRET = "zz-top-secret-42"


def _texts(value: Any) -> list[str]:
    out = [str(value), repr(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            out.extend(_texts(getattr(value, f.name)))
    return out


def assert_clean(exc: BaseException) -> None:
    """str/repr/args/attributes of the exception and of everything in its cause/context chain."""
    assert SECRET not in "".join(traceback.format_exception(exc))
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts = [*_texts(current), repr(current.args)]
        for value in getattr(current, "__dict__", {}).values():
            texts.extend(_texts(value))
        for text in texts:
            assert SECRET not in text, text
        current = current.__cause__ or current.__context__


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(secret=SECRET, faults=FaultConfig(hang_s=5.0))) as server:
        yield server


@pytest.fixture
async def admin(emulator: EmulatorServer) -> AsyncIterator[EmulatorAdmin]:
    async with EmulatorAdmin(emulator.base_url) as admin:
        await admin.reset()
        yield admin


def _client(url: str, read_timeout_s: float = 5.0) -> BitrixClient:
    return BitrixClient(WebhookUrl.parse(url), connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


@pytest.fixture
async def client(emulator: EmulatorServer, admin: EmulatorAdmin) -> AsyncIterator[BitrixClient]:
    async with _client(emulator.webhook_url, read_timeout_s=0.3) as client:
        yield client


def test_client_repr_is_redacted() -> None:
    client = _client(f"https://portal.example/rest/1/{SECRET}/")
    assert SECRET not in repr(client)
    assert SECRET not in str(client)
    assert "***" in repr(client)
    assert SECRET not in repr(client.webhook)


def test_classifications_redact_echoed_urls() -> None:
    url = f"https://portal.example/rest/1/{SECRET}/crm.deal.add"
    body = f'{{"error": "ERR {url}", "error_description": "bad call {url}"}}'.encode()
    for status in (200, 400, 500, 503):
        c = classify_response(status, body)
        assert c is not None
        assert SECRET not in "".join(_texts(c))
    c = classify_response(502, f"<html><title>{url}</title></html>".encode())
    assert c is not None
    assert SECRET not in c.description
    # a bare secret (not in a URL path) is caught when the caller passes its secrets
    body = f'{{"error": "", "error_description": "ap={SECRET}"}}'.encode()
    c = classify_response(400, body, secrets=[SECRET])
    assert c is not None
    assert SECRET not in c.description
    assert SECRET not in classify_command_error({"error": url, "error_description": url}).description
    assert SECRET not in classify_transport(OSError(url), sent=True).description


Scenario = Callable[[BitrixClient, EmulatorAdmin], Awaitable[Any]]


async def _fault(admin: EmulatorAdmin, kind: str, method: str = "crm.deal.add") -> None:
    await admin.set_faults(rules=[{"method": method, "kind": kind}])


async def _auth(c: BitrixClient, a: EmulatorAdmin) -> Any:
    await _fault(a, "auth")
    return await c.add("deal", {"TITLE": "x"})


async def _unknown_method(c: BitrixClient, a: EmulatorAdmin) -> Any:
    return await c.call("crm.unknown.method", {})


async def _rate_limit(c: BitrixClient, a: EmulatorAdmin) -> Any:
    await _fault(a, "rate_limit")
    return await c.add("deal", {"TITLE": "x"})


async def _server_500(c: BitrixClient, a: EmulatorAdmin) -> Any:
    await _fault(a, "500")
    return await c.add("deal", {"TITLE": "x"})


async def _gateway_502(c: BitrixClient, a: EmulatorAdmin) -> Any:
    await _fault(a, "502")
    return await c.add("deal", {"TITLE": "x"})


async def _read_timeout(c: BitrixClient, a: EmulatorAdmin) -> Any:
    await _fault(a, "timeout_commit")
    return await c.add("deal", {"TITLE": "x"})


async def _reset(c: BitrixClient, a: EmulatorAdmin) -> Any:
    await _fault(a, "reset")
    return await c.add("deal", {"TITLE": "x"})


async def _not_found(c: BitrixClient, a: EmulatorAdmin) -> Any:
    return await c.update("deal", 424242, {"TITLE": "x"})


async def _unserialisable(c: BitrixClient, a: EmulatorAdmin) -> Any:
    return await c.add("deal", {"TITLE": object()})


async def _whole_batch(c: BitrixClient, a: EmulatorAdmin) -> Any:
    await _fault(a, "reset", method="batch")
    return await c.batch({"a": m.crm_add("deal", {"TITLE": "x"})})


SCENARIOS: dict[str, Scenario] = {
    "auth": _auth,
    "unknown_method": _unknown_method,
    "rate_limit": _rate_limit,
    "server_500": _server_500,
    "gateway_502": _gateway_502,
    "read_timeout": _read_timeout,
    "reset": _reset,
    "not_found": _not_found,
    "unserialisable_params": _unserialisable,
    "whole_batch_reset": _whole_batch,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_error_paths_never_leak(
    name: str, client: BitrixClient, admin: EmulatorAdmin, httpx_lines: list[str]
) -> None:
    with pytest.raises(BitrixError) as info:
        await SCENARIOS[name](client, admin)
    assert_clean(info.value)
    assert info.value.__cause__ is None
    assert SECRET not in "\n".join(httpx_lines)


async def test_connection_refused_never_leaks(httpx_lines: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with _client(f"http://127.0.0.1:{port}/rest/1/{SECRET}/") as closed:
        with pytest.raises(BitrixError) as info:
            await closed.add("deal", {"TITLE": "x"})
    assert_clean(info.value)
    assert info.value.__context__ is None
    assert SECRET not in "\n".join(httpx_lines)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def httpx_lines() -> Iterator[list[str]]:
    """What the httpx/httpcore loggers emit, whatever logging configuration other tests installed."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    yield handler.lines
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_successful_calls_do_not_log_secret(client: BitrixClient, httpx_lines: list[str]) -> None:
    deal_id = await client.add("deal", {"TITLE": "x"})
    await client.batch({"g": m.crm_get("deal", deal_id)})
    text = "\n".join(httpx_lines)
    assert "HTTP Request: POST" in text  # httpx did log the request line ...
    assert SECRET not in text  # ... with the secret redacted


async def test_batch_command_errors_redacted(client: BitrixClient) -> None:
    outcome = await client.batch({"missing": m.crm_get("deal", 777)})
    assert SECRET not in "".join(_texts(outcome))
