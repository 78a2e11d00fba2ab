"""Structured logs: JSON and console output, level filtering, and the webhook secret never printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bitrix_worker.logs import configure_logging, get_logger

SECRET = "s3cr3tWebhookToken42"
URL = f"https://portal.bitrix24.ru/rest/1/{SECRET}/crm.deal.add"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)
    structlog.reset_defaults()


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _configure(fmt: Any = "json", level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(fmt=fmt, level=level, secrets=[SECRET], stream=stream)
    return stream


def test_json_lines_carry_bound_keys() -> None:
    stream = _configure("auto")  # not a TTY -> JSON
    log = get_logger(op="op-1", entity="deal", key="k-1", stream_id="1-0", attempt=2)
    log.info("applied", error_class=None, bitrix_id=17)
    (line,) = _json_lines(stream)
    assert line["event"] == "applied"
    assert line["level"] == "info"
    assert line["logger"] == "bitrix_worker"
    assert {k: line[k] for k in ("op", "entity", "key", "stream_id", "attempt", "bitrix_id")} == {
        "op": "op-1",
        "entity": "deal",
        "key": "k-1",
        "stream_id": "1-0",
        "attempt": 2,
        "bitrix_id": 17,
    }
    assert line["timestamp"].startswith("20")
    assert "T" in line["timestamp"]


def test_console_output() -> None:
    stream = _configure("console")
    get_logger(entity="deal").warning("retry_scheduled", attempt=3)
    out = stream.getvalue()
    assert "retry_scheduled" in out
    assert "attempt=3" in out
    assert "entity=deal" in out
    assert "\x1b[" not in out  # not a TTY: no colors
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_auto_on_tty_is_colored_console() -> None:
    stream = FakeTTY()
    configure_logging(fmt="auto", level="info", secrets=[SECRET], stream=stream)
    get_logger().info("hello", url=URL)
    out = stream.getvalue()
    assert "hello" in out
    assert "\x1b[" in out
    assert SECRET not in out


def test_secret_redacted_in_event_bound_and_nested_values() -> None:
    stream = _configure()
    log = get_logger(url=URL)
    log.info(f"calling {URL}")
    log.info("payload", payload={"fields": {"link": URL, "list": [URL, (SECRET,)]}, SECRET: 1})
    log.info("object", obj=ValueError(f"bad {SECRET}"))
    out = stream.getvalue()
    assert SECRET not in out
    lines = _json_lines(stream)
    assert lines[0]["event"] == "calling https://portal.bitrix24.ru/rest/1/***/crm.deal.add"
    assert lines[0]["url"] == "https://portal.bitrix24.ru/rest/1/***/crm.deal.add"
    assert lines[1]["payload"]["fields"]["list"][1] == ["***"]
    assert lines[1]["payload"]["***"] == 1


def test_secret_redacted_in_console_too() -> None:
    stream = _configure("console")
    get_logger(url=URL).info(f"calling {URL}", nested={"u": URL})
    assert SECRET not in stream.getvalue()
    assert "***" in stream.getvalue()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secret_redacted_in_traceback(fmt: str) -> None:
    stream = _configure(fmt)
    log = get_logger()
    try:
        raise RuntimeError(f"POST {URL} failed")
    except RuntimeError:
        log.exception("call_failed")
    out = stream.getvalue()
    assert "RuntimeError" in out
    assert "Traceback" in out
    assert SECRET not in out
    if fmt == "json":
        (line,) = _json_lines(stream)
        assert "***" in line["exception"]


def test_stdlib_loggers_routed_and_redacted() -> None:
    stream = _configure()
    logging.getLogger("httpx").warning("HTTP Request: POST %s", URL)
    logging.getLogger("httpx").info("HTTP Request: POST %s", URL)  # httpx INFO is silenced
    try:
        raise ConnectionError(URL)
    except ConnectionError:
        logging.getLogger("uvicorn.error").exception("boom")
    out = stream.getvalue()
    assert SECRET not in out
    lines = _json_lines(stream)
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("httpx", "warning"),
        ("uvicorn.error", "error"),
    ]
    assert lines[0]["event"] == "HTTP Request: POST https://portal.bitrix24.ru/rest/1/***/crm.deal.add"
    assert "ConnectionError" in lines[1]["exception"]
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


def test_level_filtering() -> None:
    stream = _configure(level="warning")
    log = get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    logging.getLogger("sqlalchemy.engine").info("select 1")
    log.error("e")
    assert [line["event"] for line in _json_lines(stream)] == ["w", "e"]


def test_debug_level_and_reconfigure_does_not_duplicate() -> None:
    _configure(level="info")
    stream = _configure(level="DEBUG")
    get_logger().debug("d")
    assert [line["event"] for line in _json_lines(stream)] == ["d"]
    root_handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "RedactingHandler"]
    assert len(root_handlers) == 1


def test_unknown_level_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(fmt="json", level="loud", stream=io.StringIO())


def test_a_one_character_secret_masks_the_url_segment_but_not_every_letter() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", secrets=["e"], stream=stream)
    log = structlog.stdlib.get_logger("bitrix_worker.sending")
    log.info("sending", url="https://portal.bitrix24.ru/rest/1/e/crm.deal.add", note="e")
    (line,) = _json_lines(stream)
    assert (
        line["logger"] == "bitrix_worker.sending"
    )  # substring redaction made it "bitrix_work***r.s***nding"
    assert line["event"] == "sending"
    assert line["url"] == "https://portal.bitrix24.ru/rest/1/***/crm.deal.add"
    assert line["note"] == "***"  # the secret standing alone is still masked
