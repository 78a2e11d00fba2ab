"""BitrixClient against the emulator over real loopback HTTP: every outcome class, one attempt per call."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bitrix_worker.bitrix import BitrixClient, Command
from bitrix_worker.bitrix import methods as m
from bitrix_worker.bitrix.marking import marking_transport
from bitrix_worker.emulator import (
    EmulatorAdmin,
    EmulatorConfig,
    EmulatorServer,
    FaultConfig,
    SchemaConfig,
    UserFieldConfig,
)
from bitrix_worker.errors import (
    AuthError,
    BitrixError,
    LimitError,
    PermanentBitrixError,
    TransientBitrixError,
)
from bitrix_worker.redaction import WebhookUrl
from bitrix_worker.taxonomy import ErrorClass, Execution

SECRET = "integration-secret-7"
ORIGINATOR = "bitrix-worker-test"

#: The portal keeps only user fields it has; these tests write one multiple field.
TAGS = SchemaConfig(user_fields={"deal": [UserFieldConfig(name="UF_CRM_TAGS", multiple=True)]})


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(secret=SECRET, faults=FaultConfig(hang_s=5.0), crm_schema=TAGS)
    with EmulatorServer(config) as server:
        yield server


def _client(url: str, *, read_timeout_s: float = 5.0, **options: Any) -> BitrixClient:
    return BitrixClient(
        WebhookUrl.parse(url), connect_timeout_s=2.0, read_timeout_s=read_timeout_s, **options
    )


@pytest.fixture(params=["httpx-client", "own-transport"])
async def client(
    emulator: EmulatorServer, admin: EmulatorAdmin, request: pytest.FixtureRequest
) -> AsyncIterator[BitrixClient]:
    """Both ways a request goes: through httpx's client (no transport given) and straight to the transport
    the worker gives it (``marking_transport``)."""
    options = {"transport": marking_transport(4)} if request.param == "own-transport" else {}
    async with _client(emulator.webhook_url, **options) as client:
        yield client


async def _raises(coro: Any) -> BitrixError:
    with pytest.raises(BitrixError) as info:
        await coro
    return info.value


def _deal(key: str, **extra: Any) -> dict[str, Any]:
    return {"TITLE": f"Order {key}", "ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": key, **extra}


async def test_add_get_update_delete(client: BitrixClient) -> None:
    deal_id = await client.add("deal", _deal("k1", CURRENCY_ID="USD", OPPORTUNITY=10))
    assert deal_id > 0
    row = await client.get("deal", deal_id)
    assert (row["TITLE"], row["ORIGIN_ID"], row["CURRENCY_ID"]) == ("Order k1", "k1", "USD")
    assert await client.update("deal", deal_id, {"TITLE": "Renamed"}) is True
    assert (await client.get("deal", deal_id))["TITLE"] == "Renamed"
    assert await client.delete("deal", deal_id) is True
    error = await _raises(client.get("deal", deal_id))
    assert error.classification.error_class is ErrorClass.NOT_FOUND


async def test_call_result_carries_time(client: BitrixClient) -> None:
    result = await client.call("crm.deal.add", {"fields": _deal("t1")})
    assert isinstance(result.result, int)
    assert result.http_status == 200
    assert result.time is not None
    assert result.time.operating is not None
    assert result.elapsed_s > 0
    fields = await client.fields("deal")
    assert "ORIGIN_ID" in fields


async def test_list_by_origin_with_paging(client: BitrixClient, admin: EmulatorAdmin) -> None:
    first = {f"a{i}": m.crm_add("deal", _deal("shared", OPPORTUNITY=i)) for i in range(50)}
    second = {f"b{i}": m.crm_add("deal", _deal("shared", OPPORTUNITY=50 + i)) for i in range(10)}
    other = {"x": m.crm_add("deal", _deal("other"))}
    for chunk in (first, second, other):
        outcome = await client.batch(chunk)
        assert not outcome.errors
        assert not outcome.not_run
    flt = {"=ORIGINATOR_ID": ORIGINATOR, "=ORIGIN_ID": "shared"}
    page = await client.list("deal", filter=flt, select=["ID", "ORIGIN_ID"], order={"ID": "ASC"})
    assert (len(page.items), page.total, page.next) == (50, 60, 50)
    assert {item["ORIGIN_ID"] for item in page.items} == {"shared"}
    rest = await client.list("deal", filter=flt, select=["ID"], order={"ID": "ASC"}, start=page.next)
    assert (len(rest.items), rest.total, rest.next) == (10, 60, None)
    ids = [int(item["ID"]) for item in page.items + rest.items]
    assert ids == sorted(ids)
    assert len(set(ids)) == 60
    only = await client.list("deal", filter={"=ORIGIN_ID": "other"})
    assert (len(only.items), only.total, only.next) == (1, 1, None)


async def test_update_missing_is_not_found(client: BitrixClient) -> None:
    error = await _raises(client.update("deal", 999_999, {"TITLE": "x"}))
    assert isinstance(error, PermanentBitrixError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status, c.bitrix_code) == (
        ErrorClass.NOT_FOUND,
        Execution.EXECUTED,
        400,
        None,
    )
    assert c.description == "Not found"


async def test_invalid_currency_is_invalid_data(client: BitrixClient) -> None:
    error = await _raises(client.add("deal", _deal("bad", CURRENCY_ID="XXX")))
    assert isinstance(error, PermanentBitrixError)
    assert error.classification.error_class is ErrorClass.INVALID_DATA
    assert "Currency" in error.classification.description


async def test_wrong_secret_is_auth(emulator: EmulatorServer, admin: EmulatorAdmin) -> None:
    url = emulator.webhook_url.replace(SECRET, "not-the-secret")
    async with _client(url) as wrong:
        error = await _raises(wrong.add("deal", _deal("k")))
    assert isinstance(error, AuthError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status, c.bitrix_code) == (
        ErrorClass.AUTH,
        Execution.NOT_EXECUTED,
        401,
        "INVALID_CREDENTIALS",
    )
    assert (await admin.stats())["entities"]["deal"] == 0


async def test_unknown_method_is_auth(client: BitrixClient) -> None:
    error = await _raises(client.call("crm.dael.add", {}))
    assert isinstance(error, AuthError)
    c = error.classification
    assert (c.error_class, c.bitrix_code, c.http_status) == (ErrorClass.AUTH, "ERROR_METHOD_NOT_FOUND", 404)


async def test_leaky_bucket_is_rate_limited(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await admin.set_limits(burst=3, drain_per_s=0.001)
    for _ in range(3):
        await client.list("deal")
    error = await _raises(client.add("deal", _deal("late")))
    assert isinstance(error, LimitError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status, c.bitrix_code) == (
        ErrorClass.RATE_LIMITED,
        Execution.NOT_EXECUTED,
        503,
        "QUERY_LIMIT_EXCEEDED",
    )
    assert not c.counts_against_budget
    assert (await admin.stats())["entities"]["deal"] == 0


async def test_operation_time_limit_is_method_limited(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await admin.set_limits(operating_limit_s=1.0, processing_s={"crm.deal.add": 0.6})
    results = [await client.call("crm.deal.add", {"fields": _deal(f"op{i}")}) for i in range(2)]
    error = await _raises(client.add("deal", _deal("op-late")))
    assert isinstance(error, LimitError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status, c.bitrix_code) == (
        ErrorClass.METHOD_LIMITED,
        Execution.NOT_EXECUTED,
        429,
        "OPERATION_TIME_LIMIT",
    )
    last = results[-1].time
    assert last is not None
    assert last.operating is not None
    assert last.operating >= 1.0
    assert last.operating_reset_at is not None
    assert last.operating_reset_at > time.time()
    # other methods still work
    assert (await client.list("deal")).total == 2


async def test_500_is_server_error(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "500", "max_hits": 1}])
    error = await _raises(client.add("deal", _deal("k")))
    assert isinstance(error, TransientBitrixError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status, c.bitrix_code) == (
        ErrorClass.SERVER_ERROR,
        Execution.AMBIGUOUS,
        500,
        "INTERNAL_SERVER_ERROR",
    )
    assert await client.add("deal", _deal("k")) > 0  # max_hits spent: the next attempt runs


@pytest.mark.parametrize(("kind", "title"), [("502", "Bad Gateway"), ("504", "Gateway Time-out")])
async def test_gateway_html_is_ambiguous(
    client: BitrixClient, admin: EmulatorAdmin, kind: str, title: str
) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.update", "kind": kind}])
    error = await _raises(client.update("deal", 1, {"TITLE": "x"}))
    c = error.classification
    assert (c.error_class, c.execution, c.http_status, c.bitrix_code) == (
        ErrorClass.SERVER_ERROR,
        Execution.AMBIGUOUS,
        int(kind),
        None,
    )
    assert title in c.description


async def test_timeout_after_commit_is_ambiguous_and_committed(
    emulator: EmulatorServer, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "timeout_commit", "max_hits": 1}])
    async with _client(emulator.webhook_url, read_timeout_s=0.3) as slow:
        error = await _raises(slow.add("deal", _deal("slow-1")))
    assert isinstance(error, TransientBitrixError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status) == (ErrorClass.NETWORK, Execution.AMBIGUOUS, None)
    assert "ReadTimeout" in c.description
    rows = await admin.entities("deal")
    assert [row["ORIGIN_ID"] for row in rows] == ["slow-1"]


async def test_connection_reset_is_ambiguous(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "reset", "max_hits": 1}])
    error = await _raises(client.add("deal", _deal("r")))
    c = error.classification
    assert (c.error_class, c.execution, c.http_status) == (ErrorClass.NETWORK, Execution.AMBIGUOUS, None)
    assert await client.add("deal", _deal("r")) > 0  # the pool recovers on the next call


async def test_connection_refused_is_not_executed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with _client(f"http://127.0.0.1:{port}/rest/1/{SECRET}/") as closed:
        error = await _raises(closed.add("deal", _deal("k")))
    assert isinstance(error, TransientBitrixError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status) == (ErrorClass.NETWORK, Execution.NOT_EXECUTED, None)
    assert "ConnectError" in c.description


async def test_batch_mixed_results(client: BitrixClient, admin: EmulatorAdmin) -> None:
    existing = await client.add("deal", _deal("b0"))
    commands: dict[str, Command] = {
        "add": m.crm_add("deal", _deal("b1", CURRENCY_ID="EUR", UF_CRM_TAGS=["a", "b"])),
        "missing": m.crm_update("deal", 999_999, {"TITLE": "x"}),
        "bad": m.crm_add("deal", _deal("b2", CURRENCY_ID="XXX")),
        "get": m.crm_get("deal", existing),
        "list": m.crm_list("deal", filter={"=ORIGINATOR_ID": ORIGINATOR}, select=["ID"]),
    }
    outcome = await client.batch(commands)
    assert set(outcome.results) == {"add", "get", "list"}
    assert isinstance(outcome.results["add"], int)
    assert outcome.results["get"]["ORIGIN_ID"] == "b0"
    assert {k: c.error_class for k, c in outcome.errors.items()} == {
        "missing": ErrorClass.NOT_FOUND,
        "bad": ErrorClass.INVALID_DATA,
    }
    assert outcome.not_run == set()
    assert set(outcome.times) == {"add", "get", "list"}
    assert outcome.totals == {"list": 2}
    assert outcome.nexts == {}
    assert outcome.time is not None
    created = await client.get("deal", outcome.results["add"])
    assert (created["CURRENCY_ID"], created["UF_CRM_TAGS"]) == ("EUR", ["a", "b"])


async def test_batch_halt_reports_not_run(client: BitrixClient, admin: EmulatorAdmin) -> None:
    commands = {
        "first": m.crm_add("deal", _deal("h1")),
        "fails": m.crm_delete("deal", 999_999),
        "skipped1": m.crm_add("deal", _deal("h2")),
        "skipped2": m.crm_get("deal", 1),
    }
    outcome = await client.batch(commands, halt=True)
    assert set(outcome.results) == {"first"}
    assert set(outcome.errors) == {"fails"}
    assert outcome.not_run == {"skipped1", "skipped2"}
    assert [row["ORIGIN_ID"] for row in await admin.entities("deal")] == ["h1"]


async def test_batch_command_limit_error_is_returned(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "scope": "command", "kind": "method_limit"}])
    outcome = await client.batch({"a": m.crm_add("deal", _deal("x")), "g": m.crm_list("deal")})
    c = outcome.errors["a"]
    assert (c.error_class, c.execution) == (ErrorClass.METHOD_LIMITED, Execution.NOT_EXECUTED)
    assert set(outcome.results) == {"g"}


async def test_whole_batch_failure_raises(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "batch", "scope": "request", "kind": "502"}])
    error = await _raises(client.batch({"a": m.crm_add("deal", _deal("x"))}))
    assert error.classification.execution is Execution.AMBIGUOUS
    assert error.method == "batch"


async def test_51_commands_rejected_before_any_call(client: BitrixClient, admin: EmulatorAdmin) -> None:
    commands = {f"c{i}": m.crm_add("deal", _deal(f"k{i}")) for i in range(51)}
    with pytest.raises(ValueError, match="at most 50"):
        await client.batch(commands)
    assert (await admin.stats())["requests"] == 0


class _Recorder:
    """A loopback HTTP/1.1 server that keeps every request's bytes and answers a batch's shape; its first
    answer sets a cookie (httpx's client sends it back from then on, so must the direct path)."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: Any = None
        self.handlers: set[Any] = set()

    async def __aenter__(self) -> str:
        import asyncio

        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/rest/1/{SECRET}/"

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        self.server.close()
        await self.server.wait_closed()
        if self.handlers:  # each ends when its client closes the connection
            await asyncio.wait(self.handlers, timeout=5)

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        body = b'{"result": {"result": {"a": true, "b": true}}, "time": {"operating": 0.5}}'
        self.handlers.add(asyncio.current_task())
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:  # the client closed its connection
                    return
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                cookie = b"Set-Cookie: PHPSESSID=abc123; path=/\r\n" if len(self.requests) == 1 else b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + cookie
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                await writer.drain()
        finally:
            writer.close()


async def _sent_by(client: BitrixClient, recorder: _Recorder) -> list[bytes]:
    commands = {"a": m.crm_update("deal", 7, {"TITLE": "a b&c", "UF_X": [1, 2]}), "b": m.crm_get("deal", 8)}
    recorder.requests = []
    async with client:
        for _ in range(2):
            assert set((await client.batch(commands)).results) == {"a", "b"}
    return recorder.requests


async def test_the_direct_path_sends_what_httpx_s_client_sends_byte_for_byte() -> None:
    """The worker's client hands its requests straight to the transport; what goes over the wire (headers,
    their order, the cookie the portal set, the body) is what httpx's own client sends."""
    recorder = _Recorder()
    async with recorder as url:
        through_client = await _sent_by(_client(url), recorder)
        direct = await _sent_by(_client(url, transport=marking_transport(2)), recorder)
    assert direct == through_client
    assert b"\r\nCookie: PHPSESSID=abc123\r\n" in direct[1]
    assert b"PHPSESSID" not in direct[0]
    assert direct[0].startswith(b"POST /rest/1/" + SECRET.encode() + b"/batch HTTP/1.1\r\n")


def test_httpcore_finds_sniffio() -> None:
    """httpcore asks ``import sniffio`` four times per request; anyio no longer installs it, and an import
    that fails searches every ``sys.path`` entry again (~40 µs each, ~3 µs per update of a 50-command
    batch). A declared dependency keeps it installed."""
    import importlib.util

    assert importlib.util.find_spec("sniffio") is not None
