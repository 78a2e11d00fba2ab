"""Our lines' direct way past ``logging`` (loglines.py) prints what structlog's stdlib way printed.

The reference is 0ef761d's configuration rebuilt from structlog's own parts (its ``ProcessorFormatter``,
``TimeStamper`` and stdlib ``BoundLogger``; our redactor and renderer): the same calls, with hypothesis-drawn
events, values and secrets embedded in them, give the same bytes (timestamps aside, which are compared on
their own), JSON and console, our loggers' and foreign ones', in a batch or not.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from enum import IntEnum, StrEnum
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitrix_worker import logs
from bitrix_worker.loglines import RedactingHandler, UtcStamper
from bitrix_worker.logs import batched_lines, configure_logging

NAME = "bitrix_worker.delivery"
WEBHOOK_SECRET = "0123456789abcdef"
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in (NAME, "httpx", "httpcore")}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
    structlog.reset_defaults()


@contextlib.contextmanager
def _alone() -> Iterator[None]:
    """No root handler but ours (pytest adds its capture handlers to each phase): the direct way runs."""
    root = logging.getLogger()
    others = [h for h in root.handlers if type(h) is not RedactingHandler]
    for handler in others:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in others:
            root.addHandler(handler)


def _reference(stream: io.StringIO, secrets: list[str], fmt: str) -> None:
    """0ef761d's ``configure_logging``, of structlog's parts: what a line looked like before loglines.py."""
    redactor = logs._Redactor(secrets)
    renderer: Any
    if fmt in ("console", "auto"):  # auto: _printed's stream is a TTY
        renderer = structlog.dev.ConsoleRenderer(colors=fmt == "auto")
    else:
        encoder = json.JSONEncoder(default=logs._json_fallback)
        renderer = structlog.processors.JSONRenderer(serializer=lambda obj, **_: encoder.encode(obj))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            logs._redact_rendered(renderer, redactor),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _ours(stream: io.StringIO, secrets: list[str], fmt: str) -> None:
    configure_logging(fmt=fmt, level="debug", secrets=secrets, stream=stream)  # type: ignore[arg-type]


Call = tuple[str, str, dict[str, Any], dict[str, Any], tuple[Any, ...]]
"""(how, event, bound values, keywords, positional arguments); how: a method name, ``foreign`` (a stdlib
logger) or ``exception`` (inside an ``except`` block)."""


def _emit(calls: list[Call]) -> None:
    """Both configurations log from this one function: stack_info and tracebacks name the same lines."""
    for how, event, bound, kw, args in calls:
        if how == "foreign":
            logging.getLogger("uvicorn.error").warning(event, *args)
            continue
        log = structlog.get_logger(NAME).bind(**bound)
        if how == "exception":
            try:
                raise ValueError(event)
            except ValueError:
                log.exception(event, *args, **kw)
            continue
        getattr(log, how)(event, *args, **kw)


def _printed(setup: Callable[[io.StringIO, list[str], str], None], secrets: list[str], fmt: str,
             calls: list[Call], batched: bool) -> str:  # fmt: skip
    stream = _TTY() if fmt == "auto" else io.StringIO()
    root = logging.getLogger()
    with _alone():
        setup(stream, secrets, fmt)
        try:
            with batched_lines() if batched else contextlib.nullcontext():
                _emit(calls)
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
    return stream.getvalue()


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stamps_apart(text: str) -> tuple[str, list[str]]:
    return _STAMP.sub("<ts>", text), _STAMP.findall(text)


class Colour(StrEnum):
    RED = "red/=x"


class Size(IntEnum):
    BIG = 7


class Shown:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Shown({self.text})"


def _values(texts: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | texts
        | st.sampled_from([Colour.RED, Size.BIG])
        | texts.map(ValueError)
        | texts.map(Shown)
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
            | st.frozensets(st.integers() | st.text(max_size=4), max_size=3)
        ),
        max_leaves=6,
    )


_KEY = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True).filter(
    lambda k: k not in {"event", "exc_info", "positional_args", "stack_info"}
)


@st.composite
def _case(draw: st.DrawFn) -> tuple[list[str], list[Call]]:
    """Secrets (the webhook one, others drawn; a few JSON would escape) and calls whose texts hold them."""
    drawn = st.text(min_size=1, max_size=10) | st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True)
    secrets = [WEBHOOK_SECRET, *draw(st.lists(drawn, max_size=2))]
    pieces = (
        st.text(max_size=12)
        | st.sampled_from(secrets)
        | st.sampled_from(["/", "=", "https://portal.bitrix24.ru/rest/1/abcdefghijklmnop/x", "a=b&auth=zz"])
    )
    texts = st.lists(pieces, max_size=4).map("".join)
    values = _values(texts)
    calls: list[Call] = []
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["info", "debug", "warning", "error", "critical", "exception", "foreign"]))
        event = draw(texts)
        bound = draw(st.dictionaries(_KEY, values, max_size=2))
        kw = draw(st.dictionaries(_KEY, values, max_size=4))
        args: tuple[Any, ...] = ()
        if draw(st.integers(0, 5)) == 0:  # a format string and its argument
            event, args = event.replace("%", "") + " %s", (draw(values),)
        if how == "foreign":
            event, args = event.replace("%", "") + " %r", (draw(values),)
        elif draw(st.integers(0, 7)) == 0:
            kw["stack_info"] = True
        calls.append((how, event, bound, kw, args))
    return secrets, calls


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_case(), fmt=st.sampled_from(["json", "console", "auto"]), batched=st.booleans())
def test_lines_are_the_bytes_structlogs_way_printed(
    case: tuple[list[str], list[Call]], fmt: str, batched: bool
) -> None:
    secrets, calls = case
    printed = [_printed(setup, secrets, fmt, calls, batched) for setup in (_ours, _reference)]  # one line: a
    (ours, our_stamps), (theirs, their_stamps) = map(_stamps_apart, printed)  # stack_info shows its number
    assert ours == theirs
    assert len(our_stamps) == len(their_stamps) == ours.count("<ts>")


def test_the_worker_lines_take_the_direct_way_and_print_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-operation line makes no LogRecord when our handler is alone, and one when another handler
    (here a collecting one, as pytest's) is on the way; both print the same line."""
    made: list[str] = []
    make = logging.Logger.makeRecord

    def counting(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(self.name)
        return make(self, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    fields = {"reason": "updated", "bitrix_id": 7, "op": "update", "entity": "deal", "key": "k-1"}
    direct = io.StringIO()
    with _alone():
        configure_logging(fmt="json", level="info", secrets=[WEBHOOK_SECRET], stream=direct)
        structlog.get_logger(NAME).info("applied", **fields)
    assert made == []
    collected: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = collected.append  # type: ignore[method-assign]
    logging.getLogger(NAME).addHandler(collector)
    stdlib = io.StringIO()
    try:
        with _alone():
            configure_logging(fmt="json", level="info", secrets=[WEBHOOK_SECRET], stream=stdlib)
            structlog.get_logger(NAME).info("applied", **fields)
    finally:
        logging.getLogger(NAME).removeHandler(collector)
    assert made == [NAME]
    assert len(collected) == 1
    assert _stamps_apart(direct.getvalue())[0] == _stamps_apart(stdlib.getvalue())[0]
    (line,) = [json.loads(text) for text in direct.getvalue().splitlines()]
    assert list(line) == [*fields, "event", "logger", "level", "timestamp"]


def test_the_level_filter_holds_on_the_direct_way() -> None:
    stream = io.StringIO()
    with _alone():
        configure_logging(fmt="json", level="info", secrets=[], stream=stream)
        log = structlog.get_logger(NAME)
        log.debug("hidden")
        log.info("shown")
        logging.getLogger(NAME).setLevel(logging.ERROR)
        log.warning("hidden by the logger's own level")
        log.error("shown too")
        logging.getLogger(NAME).setLevel(logging.NOTSET)
        logging.disable(logging.INFO)
        try:
            log.info("hidden by logging.disable")
        finally:
            logging.disable(logging.NOTSET)
        logging.getLogger(NAME).disabled = True
        try:
            log.error("hidden: the logger is disabled")
        finally:
            logging.getLogger(NAME).disabled = False
    assert [json.loads(text)["event"] for text in stream.getvalue().splitlines()] == ["shown", "shown too"]


def test_a_batch_is_written_at_once_in_order_even_when_it_raises() -> None:
    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes = 0

        def write(self, s: str) -> int:
            self.writes += 1
            return super().write(s)

    stream = Writes()
    with _alone():
        configure_logging(fmt="json", level="info", secrets=[], stream=stream)
        log = structlog.get_logger(NAME)
        with contextlib.suppress(RuntimeError), batched_lines():
            log.info("one")
            logging.getLogger("uvicorn.error").warning("two")  # a stdlib record, kept in its place
            with batched_lines():  # an inner block: the outer one writes
                log.info("three")
            assert stream.getvalue() == ""
            raise RuntimeError
        log.info("four")
    events = [json.loads(text)["event"] for text in stream.getvalue().splitlines()]
    assert events == ["one", "two", "three", "four"]
    assert stream.writes == 2


def test_configuring_twice_writes_to_the_new_stream_only() -> None:
    first, second = io.StringIO(), io.StringIO()
    with _alone():
        configure_logging(fmt="json", level="info", secrets=[], stream=first)
        log = structlog.get_logger(NAME)
        log.info("before")
        configure_logging(fmt="console", level="info", secrets=[], stream=second)
        log.info("after")  # the same (cached) logger
    assert [json.loads(text)["event"] for text in first.getvalue().splitlines()] == ["before"]
    assert "after" in second.getvalue()
    assert not second.getvalue().startswith("{")


@given(st.integers(min_value=0, max_value=2**62))
def test_the_stamp_is_datetimes_isoformat_of_the_clock(ns: int) -> None:
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    expected = epoch + datetime.timedelta(microseconds=ns // 1000)
    stamper = UtcStamper(clock=lambda: ns)
    for _ in range(2):  # the second from the cache
        assert stamper(None, "info", {})["timestamp"] == expected.isoformat().replace("+00:00", "Z")


def test_the_stamp_follows_the_clock_across_seconds_and_back() -> None:
    now = [1_765_000_000_999_999_000]
    stamper = UtcStamper(clock=lambda: now[0])
    seen = []
    for ns in (1_765_000_000_999_999_000, 1_765_000_001_000_000_000, 1_765_000_001_000_001_999, 5_000):
        now[0] = ns
        seen.append(stamper(None, "info", {})["timestamp"])
    assert seen == [
        "2025-12-06T05:46:40.999999Z",
        "2025-12-06T05:46:41Z",
        "2025-12-06T05:46:41.000001Z",
        "1970-01-01T00:00:00.000005Z",
    ]


def test_the_stamp_reads_the_clock_structlogs_stamper_reads() -> None:
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)
    ours = UtcStamper()

    def parsed(stamper: Any) -> datetime.datetime:
        return datetime.datetime.fromisoformat(stamper(None, "info", {})["timestamp"])

    for _ in range(1000):
        before, now, after = parsed(theirs), parsed(ours), parsed(theirs)
        assert before <= now <= after
