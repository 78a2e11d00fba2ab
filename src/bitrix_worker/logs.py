"""Structured logging: structlog for our lines, stdlib ``logging`` (uvicorn, httpx, sqlalchemy) routed through
the same renderer, and the webhook secret redacted from everything either of them prints.

Output is JSON lines when the stream is not a TTY (or ``fmt="json"``), readable console lines when it is
(or ``fmt="console"``; colored only on a TTY). Timestamps are ISO 8601 in UTC.

Redaction happens twice: every string in the event dict (bound values, nested containers, the event and the
formatted traceback) goes through ``redaction.redact`` before rendering, and the rendered line once more, so
no renderer quirk can let the secret through. The httpx and httpcore loggers are held at WARNING: httpx
logs each request URL at INFO, and the URL carries the secret. A line neither step would change is found by
one scan of the rendered line instead (``loglines.LineFormatter.line``, which says why that is the same).

Our own lines skip the stdlib's records when our handler is the only one to get them
(``loglines.DirectBoundLogger``): same bytes, a third of the cost; ``batched_lines`` writes a block's lines
at once. Foreign records (uvicorn, sqlalchemy, httpx warnings) take the stdlib way through the same handler.

Convention for worker log lines (``reporting.report_settled`` writes them): one line per operation, with

    op           the operation kind (create | update | upsert | delete)
    entity       deal | contact | company | lead
    key          the producer's key (ORIGIN_ID)
    stream_id    the stream id the operation was first enqueued under
    attempt      attempts so far (failed requests; a redelivery after a crash is not one)
    error_class  the taxonomy class of the last failure (``ErrorClass.value``), or null
    reason       why it ended so (``Reason.sentence`` with its numbers)

Event names are short and stable (``applied``, ``skipped``, ``dead-lettered``, ``retry scheduled``) so
lines stay greppable; the worker binds ``consumer`` and ``portal`` to its own lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .loglines import DirectBoundLogger, LineFormatter, RedactingHandler, UtcStamper, plain_encoder
from .redaction import redact

__all__ = ["batched_lines", "configure_logging", "get_logger", "lean_records"]

QUIET_LOGGERS = ("httpx", "httpcore")
"""Held at WARNING at least: they log request URLs (which contain the webhook secret) at INFO/DEBUG."""

SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
"""Routed through our redacting handler even if uvicorn configured them before us."""

_PLAIN = frozenset({int, float, bool, type(None)})
"""Exact types a line's value may have that ``redact`` never changes (checked before ``isinstance``)."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _Redactor:
    """Processor: redact every string in the event dict, recursively; other objects become redacted reprs."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = tuple(s for s in secrets if s)

    def text(self, value: str) -> str:
        return redact(value, self.secrets)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {self.value(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return self.text(repr(value))

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        if self._nothing_to_mask(event_dict):
            return event_dict
        return {k: self.value(v) for k, v in event_dict.items()}

    def _nothing_to_mask(self, event_dict: EventDict) -> bool:
        """True when every value is a plain string or number and none holds a secret, a ``/`` or a ``=``:
        ``redact`` would return each string unchanged (its patterns all need one of them). One scan of the
        line's strings instead of one ``redact`` per value; the worker writes such a line per operation."""
        texts = []
        for value in event_dict.values():
            kind = type(value)
            if kind is str:
                texts.append(value)
            elif kind in _PLAIN:
                continue
            elif isinstance(value, str):  # a str subclass (an enum member)
                texts.append(value)
            elif not (value is None or isinstance(value, bool | int | float)):
                return False
        blob = "\x00".join(texts)
        return "/" not in blob and "=" not in blob and not any(s in blob for s in self.secrets)


def _redact_rendered(renderer: Processor, redactor: _Redactor) -> Processor:
    """Wrap the final renderer so the rendered line itself is redacted too."""

    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        rendered = renderer(logger, name, event_dict)
        return redactor.text(rendered if isinstance(rendered, str) else str(rendered))

    return render


def _json_fallback(value: Any) -> Any:
    """What structlog's JSONRenderer does with an object JSON cannot hold (the redactor leaves none)."""
    structlog_form = getattr(value, "__structlog__", None)
    return structlog_form() if callable(structlog_form) else repr(value)


def _level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}") from None


def configure_logging(
    *,
    fmt: Literal["auto", "json", "console"],
    level: str,
    secrets: Sequence[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger to write redacted lines to ``stream`` (stderr).

    Safe to call again: the previous handler installed here is replaced, other root handlers are kept.
    """
    out = stream if stream is not None else sys.stderr
    threshold = _level(level)
    is_tty = bool(getattr(out, "isatty", lambda: False)())
    console = fmt == "console" or (fmt == "auto" and is_tty)
    redactor = _Redactor(secrets)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        UtcStamper(),
        # a stack_info line's stack starts at its caller, not in DirectBoundLogger's frames
        structlog.processors.StackInfoRenderer(additional_ignores=[DirectBoundLogger.__module__]),
    ]
    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=is_tty)
    else:
        # one encoder for every line: json.dumps(..., default=...) would build a new one per call
        encoder = json.JSONEncoder(default=_json_fallback)
        renderer = structlog.processors.JSONRenderer(serializer=lambda obj, **_: encoder.encode(obj))
    final: list[Processor] = [
        structlog.processors.format_exc_info,  # the traceback becomes a string, so it is redacted below
        redactor,
        _redact_rendered(renderer, redactor),
    ]
    json_safe = all(json.dumps(s) == f'"{s}"' for s in redactor.secrets)
    plain = plain_encoder() if not console and json_safe else None
    formatter = LineFormatter(shared=shared, final=final, plain=plain, secrets=redactor.secrets)

    handler = RedactingHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, RedactingHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, threshold))
    for name in SERVER_LOGGERS:
        # uvicorn's default dictConfig gives these their own unredacted handlers and stops propagation.
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=DirectBoundLogger,
        # A logger made with ``structlog.get_logger`` otherwise builds itself anew at every call (and the
        # worker writes a line per operation). Caching it is safe here: the
        # processors above take no settings (the format, level and secrets live in the stdlib handler that
        # a later call replaces), and a logger used before this call was made is not cached.
        cache_logger_on_first_use=True,
    )


def batched_lines() -> contextlib.AbstractContextManager[None]:
    """A block whose log lines are written together at its end (``RedactingHandler.batched``): a worker
    reports each batch of operations in one, a line per operation. Does nothing if ``configure_logging``
    was not called."""
    for handler in logging.getLogger().handlers:
        if type(handler) is RedactingHandler:
            return handler.batched()
    return contextlib.nullcontext()


def lean_records() -> None:
    """For a worker process, which writes a line per operation: log records stop looking up their caller's
    file, line and function, their thread, process id and process name, which no line printed here shows.

    These are the knobs of the ``logging`` HOWTO's "Optimization" section: without them every record walks
    the stack (``findCaller``; structlog's own version walks it further) and asks for its thread and
    process. Process-wide, so only the ``run`` command calls it (``tuning``)."""
    logging._srcfile = None  # documented as the way to skip findCaller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


LOGGER_NAME = "bitrix_worker"


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    """A stdlib-backed structlog logger named ``bitrix_worker`` with ``bound`` key/values.

    See the module docstring for the keys worker lines carry.
    """
    return structlog.stdlib.get_logger(LOGGER_NAME).bind(**bound)
