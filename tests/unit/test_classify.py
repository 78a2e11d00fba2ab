"""Table tests for the pure classifier: the cases behind docs/errors.md's tables, and their edges."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitrix_worker.classify import (
    classify_command_error,
    classify_response,
    classify_transport,
    decode_answer,
    parse_time,
)
from bitrix_worker.defaults import DESCRIPTION_MAX_CHARS
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution, TimeInfo

NF = ErrorClass.NOT_FOUND
DATA = ErrorClass.INVALID_DATA
AUTH = ErrorClass.AUTH
RATE = ErrorClass.RATE_LIMITED
METHOD = ErrorClass.METHOD_LIMITED
BLOCKED = ErrorClass.BLOCKED
SERVER = ErrorClass.SERVER_ERROR
EX = Execution.EXECUTED
NOT = Execution.NOT_EXECUTED
AMB = Execution.AMBIGUOUS


def err(code: Any, description: str = "") -> bytes:
    return json.dumps({"error": code, "error_description": description}).encode()


HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
HTML_504 = b"<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>"
HTML_500 = b"<!DOCTYPE html><html><body>Internal error</body></html>"

# (id, status, body, class, execution, expected bitrix_code)
# fmt: off
ROWS: list[tuple[str, int, bytes, ErrorClass, Execution, str | None]] = [
    # limits
    ("query_limit_503", 503, err("QUERY_LIMIT_EXCEEDED", "Too many requests"), RATE, NOT,
     "QUERY_LIMIT_EXCEEDED"),
    ("query_limit_lower", 503, err("query_limit_exceeded"), RATE, NOT, "query_limit_exceeded"),
    ("operation_time_429", 429, err("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."),
     METHOD, NOT, "OPERATION_TIME_LIMIT"),
    ("overload_503", 503, err("OVERLOAD_LIMIT", "REST API is blocked due to overload."), BLOCKED, NOT,
     "OVERLOAD_LIMIT"),
    ("overload_200_old_portal", 200, err("OVERLOAD_LIMIT"), BLOCKED, NOT, "OVERLOAD_LIMIT"),
    # server errors
    ("internal_server_error", 500, err("INTERNAL_SERVER_ERROR", "Internal server error"), SERVER, AMB,
     "INTERNAL_SERVER_ERROR"),
    ("unexpected_answer", 500, err("ERROR_UNEXPECTED_ANSWER", "Server returned an unexpected response"),
     SERVER, AMB, "ERROR_UNEXPECTED_ANSWER"),
    ("error_core_400", 400, err("ERROR_CORE", 'Invalid value for the "Currency" field'), DATA, EX,
     "ERROR_CORE"),
    ("error_core_500", 500, err("ERROR_CORE", "SQL query error!"), SERVER, AMB, "ERROR_CORE"),
    ("error_core_200", 200, err("ERROR_CORE", "something"), DATA, EX, "ERROR_CORE"),
    # invalid data
    ("error_argument", 400, err("ERROR_ARGUMENT", "Argument 'id' is null or empty"), DATA, EX,
     "ERROR_ARGUMENT"),
    ("wrong_encoding", 200, err("WRONG_ENCODING", "Wrong request encoding"), DATA, EX, "WRONG_ENCODING"),
    ("internal_wrong_transport", 500, err("INTERNAL_WRONG_TRANSPORT"), DATA, NOT, "INTERNAL_WRONG_TRANSPORT"),
    ("internal_wrong_handler", 500, err("INTERNAL_WRONG_HANDLER_CLASS"), DATA, NOT,
     "INTERNAL_WRONG_HANDLER_CLASS"),
    ("batch_length", 400, err("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded"), DATA, NOT,
     "ERROR_BATCH_LENGTH_EXCEEDED"),
    ("batch_method_not_allowed", 405, err("ERROR_BATCH_METHOD_NOT_ALLOWED"), DATA, NOT,
     "ERROR_BATCH_METHOD_NOT_ALLOWED"),
    ("crm_field_not_valid", 400, err("CRM_FIELD_ERROR_VALUE_NOT_VALID", 'Invalid value for field "x"'),
     DATA, EX, "CRM_FIELD_ERROR_VALUE_NOT_VALID"),
    ("crm_field_required", 400, err("CRM_FIELD_ERROR_REQUIRED", 'The "Name" field is required'), DATA, EX,
     "CRM_FIELD_ERROR_REQUIRED"),
    ("crm_field_other_family", 400, err("CRM_FIELD_ERROR_SOMETHING_NEW"), DATA, EX,
     "CRM_FIELD_ERROR_SOMETHING_NEW"),
    ("invalid_arg_value", 400, err("INVALID_ARG_VALUE", "bad filter"), DATA, EX, "INVALID_ARG_VALUE"),
    ("code_100_string", 400, err("100", "Expected iterable value"), DATA, EX, "100"),
    ("code_100_int", 400, err(100, "Expected iterable value"), DATA, EX, "100"),
    ("create_dynamic_restricted", 400, err("CREATE_DYNAMIC_ITEM_RESTRICTED"), DATA, EX,
     "CREATE_DYNAMIC_ITEM_RESTRICTED"),
    ("update_dynamic_restricted", 400, err("UPDATE_DYNAMIC_ITEM_RESTRICTED"), DATA, EX,
     "UPDATE_DYNAMIC_ITEM_RESTRICTED"),
    # auth (by code, whatever the status)
    ("method_not_found_404", 404, err("ERROR_METHOD_NOT_FOUND", "Method not found!"), AUTH, NOT,
     "ERROR_METHOD_NOT_FOUND"),
    ("no_auth_found_401", 401, err("NO_AUTH_FOUND", "Wrong authorization data"), AUTH, NOT, "NO_AUTH_FOUND"),
    ("invalid_credentials_401", 401, err("INVALID_CREDENTIALS", "Invalid request credentials"), AUTH, NOT,
     "INVALID_CREDENTIALS"),
    ("invalid_credentials_403", 403, err("INVALID_CREDENTIALS", "Invalid request credentials"), AUTH, NOT,
     "INVALID_CREDENTIALS"),
    ("insufficient_scope_401", 401, err("insufficient_scope", "The request requires higher privileges"),
     AUTH, NOT, "insufficient_scope"),
    ("insufficient_scope_403", 403, err("insufficient_scope"), AUTH, NOT, "insufficient_scope"),
    ("authorization_error_401", 401, err("authorization_error", "Unable to authorize user"), AUTH, NOT,
     "authorization_error"),
    ("access_denied_plan_401", 401, err("ACCESS_DENIED", "REST is available only on commercial plans."),
     AUTH, NOT, "ACCESS_DENIED"),
    ("access_denied_403", 403, err("ACCESS_DENIED", "Access denied!"), AUTH, NOT, "ACCESS_DENIED"),
    ("access_denied_crm_item_400", 400, err("ACCESS_DENIED", "Access denied"), AUTH, NOT, "ACCESS_DENIED"),
    ("invalid_request_400", 400, err("INVALID_REQUEST", "Https required."), AUTH, NOT, "INVALID_REQUEST"),
    ("invalid_request_401", 401, err("INVALID_REQUEST", "Https required."), AUTH, NOT, "INVALID_REQUEST"),
    ("portal_deleted_500", 500, err("PORTAL_DELETED", "Portal was deleted"), AUTH, NOT, "PORTAL_DELETED"),
    ("portal_deleted_403", 403, err("PORTAL_DELETED", "Portal was deleted"), AUTH, NOT, "PORTAL_DELETED"),
    ("portal_deleted_410", 410, err("PORTAL_DELETED"), AUTH, NOT, "PORTAL_DELETED"),
    ("intranet_only_403", 403, err("allowed_only_intranet_user"), AUTH, NOT, "allowed_only_intranet_user"),
    ("expired_token", 401, err("expired_token", "The access token provided has expired"), AUTH, NOT,
     "expired_token"),
    ("invalid_token", 401, err("invalid_token"), AUTH, NOT, "invalid_token"),
    ("user_access_error", 403, err("user_access_error"), AUTH, NOT, "user_access_error"),
    ("application_not_found", 401, err("APPLICATION_NOT_FOUND"), AUTH, NOT, "APPLICATION_NOT_FOUND"),
    ("error_oauth", 401, err("ERROR_OAUTH"), AUTH, NOT, "ERROR_OAUTH"),
    ("payment_required", 401, err("PAYMENT_REQUIRED"), AUTH, NOT, "PAYMENT_REQUIRED"),
    ("method_confirm_waiting", 401, err("METHOD_CONFIRM_WAITING"), AUTH, NOT, "METHOD_CONFIRM_WAITING"),
    ("method_confirm_denied", 401, err("METHOD_CONFIRM_DENIED"), AUTH, NOT, "METHOD_CONFIRM_DENIED"),
    ("wrong_auth_type", 403, err("WRONG_AUTH_TYPE"), AUTH, NOT, "WRONG_AUTH_TYPE"),
    ("wrong_client_200", 200, err("wrong_client"), AUTH, NOT, "wrong_client"),
    ("oauth_invalid_grant", 400, err("invalid_grant"), AUTH, NOT, "invalid_grant"),
    ("access_error_fast_bitrix", 200, err("ACCESS_ERROR"), AUTH, NOT, "ACCESS_ERROR"),
    # empty-code crm.deal.* errors (by description)
    ("empty_not_found", 400, err("", "Not found"), NF, EX, None),
    ("empty_not_found_null_code", 400, err(None, "Not found"), NF, EX, None),
    ("empty_not_found_dot", 400, err("", "Not found."), NF, EX, None),
    ("crm_item_not_found", 400, err("NOT_FOUND", "Item not found"), NF, EX, "NOT_FOUND"),
    ("crm_item_spa_not_found", 400, err("NOT_FOUND", "SPA not found"), NF, EX, "NOT_FOUND"),
    ("empty_id_invalid", 400, err("", "ID is not defined or invalid."), DATA, EX, None),
    ("empty_fields_not_array", 400, err("", "Parameter 'fields' must be array."), DATA, EX, None),
    ("empty_currency", 400, err("", 'Invalid value for the "Currency" field'), DATA, EX, None),
    ("empty_disk_exhausted", 400, err("", "Disk resource exhausted"), DATA, EX, None),
    ("empty_stage_permission", 400, err("", "Insufficient permissions to change the stage"), DATA, EX, None),
    ("empty_access_denied", 400, err("", "Access denied."), AUTH, NOT, None),
    ("empty_access_denied_nodot", 400, err("", "Access denied"), AUTH, NOT, None),
    ("empty_list_failed", 400, err("", "Failed to get list. General error."), SERVER, EX, None),
    ("empty_code_500", 500, err("", "boom"), SERVER, AMB, None),
    ("empty_code_200", 200, err("", "odd"), SERVER, AMB, None),
    # unknown codes: status fallback, then default server_error (raw code kept)
    ("unknown_code_400", 400, err("SOME_LEGACY_ID", "bad"), DATA, EX, "SOME_LEGACY_ID"),
    ("unknown_code_401", 401, err("NEW_AUTH_THING"), AUTH, NOT, "NEW_AUTH_THING"),
    ("unknown_code_200", 200, err("BRAND_NEW"), SERVER, AMB, "BRAND_NEW"),
    ("unknown_code_418", 418, err("TEAPOT"), SERVER, AMB, "TEAPOT"),
    # non-JSON / empty bodies
    ("html_502", 502, HTML_502, SERVER, AMB, None),
    ("html_504", 504, HTML_504, SERVER, AMB, None),
    ("html_500", 500, HTML_500, SERVER, AMB, None),
    ("empty_503", 503, b"", SERVER, NOT, None),
    ("html_503", 503, b"<html>Service Unavailable</html>", SERVER, NOT, None),
    ("empty_502", 502, b"", SERVER, AMB, None),
    ("empty_500", 500, b"", SERVER, AMB, None),
    ("html_200_batch_fast_bitrix_216", 200, b"<html>limit</html>", SERVER, AMB, None),
    ("json_list_200", 200, b"[1, 2]", SERVER, AMB, None),
    ("redirect_302", 302, b"", AUTH, NOT, None),
    ("redirect_301_html", 301, b"<html>Moved</html>", AUTH, NOT, None),
    ("bare_401", 401, b"Unauthorized", AUTH, NOT, None),
    ("bare_403", 403, b"", AUTH, NOT, None),
    ("bare_404_html", 404, b"<html>Not Found</html>", AUTH, NOT, None),
    ("bare_429", 429, b"", METHOD, NOT, None),
    ("bare_400", 400, b"", DATA, EX, None),
    ("bare_507", 507, b"", SERVER, AMB, None),
    ("json_400_no_error_key", 400, b'{"message": "x"}', DATA, EX, None),
    ("json_500_no_error_key", 500, b'{"result": null}', SERVER, AMB, None),
]
# fmt: on


@pytest.mark.parametrize(
    ("status", "body", "error_class", "execution", "code"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_classify_response_table(
    status: int, body: bytes, error_class: ErrorClass, execution: Execution, code: str | None
) -> None:
    c = classify_response(status, body)
    assert c is not None
    assert (c.error_class, c.execution, c.bitrix_code) == (error_class, execution, code)
    assert c.http_status == status


@pytest.mark.parametrize(
    "body",
    [
        b'{"result": 42, "time": {"operating": 0}}',
        b'{"result": true}',
        b'{"result": [], "total": 0}',
        b'{"result": null, "error": null}',
    ],
)
@pytest.mark.parametrize("status", [200, 201])
def test_success_is_none(status: int, body: bytes) -> None:
    assert classify_response(status, body) is None


def test_retry_after_header_is_kept() -> None:
    c = classify_response(503, err("QUERY_LIMIT_EXCEEDED"), headers={"Retry-After": "2.5"})
    assert c is not None
    assert c.retry_after_s == 2.5
    c = classify_response(503, b"", headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert c is not None
    assert c.retry_after_s is None
    c = classify_response(503, b"", headers={"Retry-After": "-3"})
    assert c is not None
    assert c.retry_after_s is None


def test_description_truncated_and_redacted() -> None:
    url = "https://portal.example/rest/1/zz-top-secret-42/crm.deal.add"
    c = classify_response(400, err("", f"bad call to {url} " + "x" * 500))
    assert c is not None
    assert "zz-top-secret-42" not in c.description
    assert len(c.description) <= DESCRIPTION_MAX_CHARS
    c = classify_response(400, err("", "ap=zz-top-secret-42 wrong"), secrets=["zz-top-secret-42"])
    assert c is not None
    assert "zz-top-secret-42" not in c.description


def test_html_description_uses_title() -> None:
    c = classify_response(502, HTML_502)
    assert c is not None
    assert "502 Bad Gateway" in c.description
    assert "<" not in c.description


# batch sub-command errors: same table, no status
# fmt: off
CMD_ROWS: list[tuple[str, dict[str, Any], ErrorClass, Execution]] = [
    ("cmd_not_found", {"error": "", "error_description": "Not found"}, NF, EX),
    ("cmd_item_not_found", {"error": "NOT_FOUND", "error_description": "Item not found"}, NF, EX),
    ("cmd_currency", {"error": "", "error_description": 'Invalid value for the "Currency" field'}, DATA, EX),
    ("cmd_error_core", {"error": "ERROR_CORE", "error_description": "x"}, DATA, EX),
    ("cmd_scope", {"error": "insufficient_scope", "error_description": "x"}, AUTH, NOT),
    ("cmd_access_denied_empty", {"error": "", "error_description": "Access denied."}, AUTH, NOT),
    ("cmd_rate", {"error": "QUERY_LIMIT_EXCEEDED"}, RATE, NOT),
    ("cmd_operation", {"error": "OPERATION_TIME_LIMIT"}, METHOD, NOT),
    ("cmd_overload", {"error": "OVERLOAD_LIMIT"}, BLOCKED, NOT),
    ("cmd_length", {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"},
     DATA, NOT),
    ("cmd_not_allowed", {"error": "ERROR_BATCH_METHOD_NOT_ALLOWED"}, DATA, NOT),
    ("cmd_internal", {"error": "INTERNAL_SERVER_ERROR"}, SERVER, AMB),
    ("cmd_unknown", {"error": "WHATEVER"}, SERVER, AMB),
    ("cmd_empty", {"error": "", "error_description": ""}, DATA, EX),
    ("cmd_list_failed", {"error": "", "error_description": "Failed to get list. General error."}, SERVER, EX),
    ("cmd_method_not_found", {"error": "ERROR_METHOD_NOT_FOUND"}, AUTH, NOT),
    ("cmd_field_required", {"error": "CRM_FIELD_ERROR_REQUIRED"}, DATA, EX),
]
# fmt: on


@pytest.mark.parametrize(
    ("error", "error_class", "execution"), [pytest.param(*row[1:], id=row[0]) for row in CMD_ROWS]
)
def test_classify_command_error_table(
    error: dict[str, Any], error_class: ErrorClass, execution: Execution
) -> None:
    c = classify_command_error(error)
    assert (c.error_class, c.execution, c.http_status) == (error_class, execution, None)


def test_command_error_not_a_mapping() -> None:
    c = classify_command_error("boom")  # type: ignore[arg-type]
    assert (c.error_class, c.execution) == (SERVER, AMB)


# fmt: off
TRANSPORT_ROWS = [
    ("connect_error", httpx.ConnectError("Connection refused"), False, NOT),
    ("connect_timeout", httpx.ConnectTimeout("timed out"), False, NOT),
    ("pool_timeout", httpx.PoolTimeout("pool"), False, NOT),
    ("dns", httpx.ConnectError("[Errno -2] Name or service not known"), False, NOT),
    ("read_timeout", httpx.ReadTimeout("timed out"), True, AMB),
    ("read_error_reset", httpx.ReadError("Connection reset by peer"), True, AMB),
    ("remote_protocol", httpx.RemoteProtocolError("Server disconnected"), True, AMB),
    ("write_error", httpx.WriteError("broken pipe"), True, AMB),
    ("os_error", ConnectionResetError(104, "reset"), True, AMB),
]
# fmt: on


@pytest.mark.parametrize(
    ("exc", "sent", "execution"), [pytest.param(*row[1:], id=row[0]) for row in TRANSPORT_ROWS]
)
def test_classify_transport(exc: BaseException, sent: bool, execution: Execution) -> None:
    c = classify_transport(exc, sent=sent)
    assert (c.error_class, c.execution) == (ErrorClass.NETWORK, execution)
    assert (c.http_status, c.bitrix_code) == (None, None)
    assert type(exc).__name__ in c.description


def test_transport_description_redacted() -> None:
    exc = httpx.ConnectError("failed for https://p.example/rest/7/zz-top-secret-42/crm.deal.add")
    c = classify_transport(exc, sent=False)
    assert "zz-top-secret-42" not in c.description
    c = classify_transport(ValueError("zz-top-secret-42"), sent=True, secrets=["zz-top-secret-42"])
    assert "zz-top-secret-42" not in c.description


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param([], None, id="empty_list"),
        pytest.param({"start": 1.0, "finish": 2.0}, None, id="no_known_fields"),
        pytest.param(
            {"operating": 1.5, "operating_reset_at": 1700000000, "duration": 0.2, "processing": "0.1"},
            TimeInfo(1.5, 1700000000.0, 0.2, 0.1),
            id="full",
        ),
        pytest.param({"operating": 0}, TimeInfo(operating=0.0), id="operating_zero"),
        pytest.param({"operating": True, "duration": "nan", "processing": {}}, None, id="garbage"),
    ],
)
def test_parse_time(block: Any, expected: TimeInfo | None) -> None:
    assert parse_time(block) == expected


# ---- properties ------------------------------------------------------------------------------------------

_json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_error_objects = st.fixed_dictionaries(
    {"error": _json},
    optional={"error_description": _json, "result": _json, "time": _json},
).map(lambda d: json.dumps(d).encode())
_codes = st.sampled_from(
    ["QUERY_LIMIT_EXCEEDED", "ERROR_CORE", "", "NOT_FOUND", "insufficient_scope", "100", "X"]
)
_known_errors = st.builds(err, _codes, st.text(max_size=300))
_bodies = (
    st.binary(max_size=200)
    | _error_objects
    | _known_errors
    | st.dictionaries(st.text(max_size=10), _json, max_size=5).map(lambda d: json.dumps(d).encode())
    | _json.map(lambda v: json.dumps(v).encode())
)
_headers = st.none() | st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after", "X-Other"]), st.text(max_size=12), max_size=2
)


def _valid(c: Classification | None) -> None:
    if c is None:
        return
    assert isinstance(c, Classification)
    assert isinstance(c.error_class, ErrorClass)
    assert c.error_class != ErrorClass.POISON
    assert isinstance(c.execution, Execution)
    assert len(c.description) <= DESCRIPTION_MAX_CHARS
    assert c.retry_after_s is None or c.retry_after_s >= 0


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=st.integers(min_value=100, max_value=599), body=_bodies, headers=_headers)
def test_classify_response_never_raises(status: int, body: bytes, headers: dict[str, str] | None) -> None:
    c = classify_response(status, body, headers=headers)
    _valid(c)
    if c is None:
        assert 200 <= status <= 299
    else:
        assert c.http_status == status


@settings(max_examples=300, deadline=None)
@given(error=st.dictionaries(st.sampled_from(["error", "error_description", "x"]), _json, max_size=3))
def test_classify_command_error_never_raises(error: dict[str, Any]) -> None:
    _valid(classify_command_error(error))


@settings(max_examples=200, deadline=None)
@given(block=_json)
def test_parse_time_never_raises(block: Any) -> None:
    info = parse_time(block)
    assert info is None or isinstance(info, TimeInfo)


def _typed(value: object) -> object:
    """``value`` with every number's type kept, so 1 and 1.0 (and True) compare unequal."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, repr(value))


def _json_answer(body: bytes) -> tuple[bool, object]:
    try:
        return True, _typed(json.loads(body))
    except (ValueError, RecursionError):
        return False, None


@pytest.mark.parametrize(
    "body",
    [
        b'{"result": {"c0": true}, "time": {"start": 1.5}}',
        b'{"a": 9223372036854775807, "b": -9223372036854775809, "c": 18446744073709551616}',
        b'{"a": [123456789012345678901], "b": 0.00020575523376464844, "c": 1.5e-0000000000000000000007}',
        b'{"d": 0.00020599365234375, "processing": 4.9553000053492724e-05, "n": 1234567890123456789012}',
        b'{"a": 1e400}',
        b'{"a": NaN}',
        b'{"a": "\\ud800"}',
        b'\xef\xbb\xbf{"a": 1}',
        '{"a": "\u00e9"}'.encode("utf-16"),
        b'{"a": 1, "a": 2.0}',
        b"[" * 3000 + b"]" * 3000,
        b"<html>503</html>",
        b"",
    ],
)
def test_an_answer_decodes_as_json_decodes_it(body: bytes) -> None:
    """``decode_answer`` takes orjson's faster path only where it reads the same values as ``json``."""
    ok, value = decode_answer(body)
    assert (ok, _typed(value) if ok else None) == _json_answer(body)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_any_json_answer_decodes_as_json_decodes_it(value: object) -> None:
    body = json.dumps(value).encode()
    ok, decoded = decode_answer(body)
    assert (ok, _typed(decoded)) == _json_answer(body)


@pytest.mark.parametrize(
    ("body", "long_integer"),
    [
        (b'{"duration": 0.00020599365234375, "processing": 0.00020575523376464844}', False),
        (b'{"a": 1.000000000000000000000000000000000000000001}', False),
        (b'{"a": "1234567890123456789"}', True),  # inside a string: json merely decides, same values
        (b'{"a": 1234567890123456789}', True),
        (b'{"a": -1234567890123456789}', True),
        (b"12345678901234567890", True),
        (b'{"a": 0.5, "b": [1.0000000000000000000000000000000000000001, 12345678901234567890]}', True),
        (b'{"a": 123456789012345678}', False),
    ],
)
def test_only_long_integers_leave_the_fast_path(body: bytes, long_integer: bool) -> None:
    """A batch answer's ``time`` floats must not send it to ``json`` (5x slower); a long integer must."""
    from bitrix_worker.classify import _long_integer

    assert _long_integer(body) is long_integer


@given(st.lists(st.integers(min_value=-(10**25), max_value=10**25) | st.floats(allow_nan=False), max_size=8))
def test_numbers_decode_as_json_decodes_them(numbers: list[float]) -> None:
    """Integers of any length beside floats of any precision (the fast path's edge)."""
    body = json.dumps({"time": numbers, "result": numbers}).encode()
    ok, decoded = decode_answer(body)
    assert (ok, _typed(decoded)) == _json_answer(body)
