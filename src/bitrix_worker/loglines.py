"""How one of our log lines reaches its stream: the handler, the formatter, and the direct way past
``logging`` that the worker's per-operation lines take (``logs.configure_logging`` puts them together).

Why a direct way: the worker writes a line per operation (``reporting``), and structlog's way through
the stdlib (a ``LogRecord``, the logger tree, the handler, a copy of the event dict in the formatter, the
redactor's pre-check, a JSON encoder built per line, ``redact`` of the rendered line) cost about 18 µs a
line. Each shortcut here gives the same bytes as that way, and says why; the tests compare the two
(tests/unit/test_log_lines.py), with hypothesis-drawn values and secrets.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, cast

import structlog
from structlog.processors import StackInfoRenderer
from structlog.stdlib import PositionalArgumentsFormatter, ProcessorFormatter, filter_by_level
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["DirectBoundLogger", "LineFormatter", "RedactingHandler", "UtcStamper", "plain_encoder"]


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our root handler; recognised by type so a second ``configure_logging`` replaces it.

    Inside ``batched()`` the lines it is given are kept, in order, and written at the block's end in one
    write and one flush: the worker reports a batch's operations together, and a write (a system call)
    per line was a sixth of a line's cost. The lines are the same; they appear when the batch is reported.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._held: list[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._held is None:
            super().emit(record)
            return
        try:  # StreamHandler.emit (Handler.handle holds the lock), the line kept
            self._held.append(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def emit_event(self, logger: logging.Logger, name: str, levelno: int, event_dict: EventDict) -> None:
        """``Handler.handle`` and ``emit`` for one of our lines without its ``LogRecord``: the line ``format``
        would give (``LineFormatter.line``), written and flushed (or kept) under the handler's lock."""
        formatter = cast(LineFormatter, self.formatter)  # checked by ``_only_handler``
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            try:
                line = formatter.line(logger, name, event_dict) + self.terminator
                if self._held is None:
                    self._write(line)
                else:
                    self._held.append(line)
            except RecursionError:  # as StreamHandler.emit
                raise
            except Exception:
                record = logger.makeRecord(logger.name, levelno, "(unknown file)", 0, event_dict, (), None)
                self.handleError(record)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Keep the lines given in the block and write them together at its end (an inner block: the outer
        one's end), also when it raises."""
        with self._lock():
            outer = self._held is None
            if outer:
                self._held = []
        try:
            yield
        finally:
            if outer:
                with self._lock():
                    lines, self._held = self._held or [], None
                    self._write_held(lines)

    def _write_held(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._write("".join(lines))
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": f"{len(lines)} lines of one batch"}))

    def _write(self, text: str) -> None:
        """``stream.write`` and ``StreamHandler.flush``, the lock held."""
        stream = self.stream
        stream.write(text)
        if stream and hasattr(stream, "flush"):
            stream.flush()

    def _lock(self) -> threading.RLock:
        return self.lock  # type: ignore[return-value]  # made by Handler.__init__


class LineFormatter(ProcessorFormatter):
    """``ProcessorFormatter`` without its per-line overhead for our own lines, which are written once per
    operation: the record is not copied and not passed through ``logging.Formatter.format``.

    For a structlog record that base path ends where this one does: the processors' string, since the copy's
    ``exc_info`` and ``stack_info`` are cleared first and ``%(message)s`` is the line itself. The record
    is not changed, as the copy was there to ensure. Foreign records (uvicorn, sqlalchemy) take the base path.

    ``final``: the chain after ``remove_processors_meta`` (whose keys ``line`` never adds): the exception
    formatter, the redactor and the redacting renderer. ``plain``: ``plain_encoder()`` when ``final``
    renders JSON with ``json.JSONEncoder().encode`` and redacts ``secrets`` with ``redaction.redact``, and
    JSON writes each secret's characters as themselves; else None.
    """

    def __init__(
        self, *, shared: list[Processor], final: list[Processor], plain: Any, secrets: Iterable[str]
    ) -> None:
        super().__init__(
            foreign_pre_chain=shared, processors=[ProcessorFormatter.remove_processors_meta, *final]
        )
        self._final = final
        self._plain = plain
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        logger = getattr(record, "_logger", None)
        name = getattr(record, "_name", None)
        if logger is None or name is None or self.logger is not None or not isinstance(record.msg, dict):
            return super().format(record)
        return self.line(logger, name, {**record.msg})

    def line(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        """The line of one of our event dicts (structlog's processors have run; changed in place).

        The plain way first: the JSON of an event dict the redactor would leave as it is. The redactor's
        pre-check and ``redact`` of the rendered line cost a few µs; one scan of the rendered line does both.
        Sound because JSON writes ``/``, ``=`` and every character of the secrets as themselves: a string
        anywhere in the dict holding one of them puts it in the line. With none in the line, the redactor
        returns every string unchanged (``redact`` needs a secret, a ``/`` or a ``=`` to change anything),
        so the renderer writes this line, and ``redact`` of it changes nothing either. Objects JSON cannot
        hold as such (an exception, a set, any other object) raise in this encoder: the redactor makes
        strings of them first, so such a dict takes the chain, as does one with a traceback to format.
        """
        if self._plain is not None and "exc_info" not in event_dict:
            try:
                text: str = self._plain(event_dict)
            except Exception:  # such an object, or whatever the chain will report its own way
                text = "/"
            if "/" not in text and "=" not in text:
                for secret in self._secrets:  # a loop: any() of a generator costs more than the scan
                    if secret in text:
                        break
                else:
                    return text
        ed: Any = event_dict
        for processor in self._final:
            ed = processor(logger, name, ed)
        rendered: str = ed  # the last processor is logs._redact_rendered's
        return rendered


def _refuse(value: Any) -> Any:
    raise TypeError(f"not plain JSON: {type(value).__name__}")


def plain_encoder() -> Callable[[Any], str]:
    """``json.JSONEncoder().encode`` for a value without circular references, raising TypeError at an
    object JSON cannot hold instead of passing it to ``default``. ``encode`` builds its C encoder anew at
    every call (about a µs of a line); here it is built once, with the separators and escaping ``encode``
    uses (``JSONEncoder``'s own code when the C accelerator is missing)."""
    encoder = json.JSONEncoder(check_circular=False, default=_refuse)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        return encoder.encode
    c_encode = make(None, _refuse, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda value: "".join(c_encode(value, 0))


class UtcStamper:
    """Processor: structlog's ``TimeStamper(fmt="iso", utc=True)`` at a tenth of its cost.

    That stamper writes ``datetime.now(timezone.utc).isoformat()`` with ``Z`` for ``+00:00``: the system
    clock floored to the microsecond, whose fraction ``isoformat`` leaves out when it is zero. Here the
    same clock (``time.time_ns``) gives the same text, the date and time of day formatted once a second
    instead of at every line."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (0, "1970-01-01T00:00:00")

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        second, micro = divmod(self._clock() // 1000, 1_000_000)
        cached, prefix = self._second
        if second != cached:
            prefix = datetime.datetime.fromtimestamp(second, datetime.UTC).isoformat()[:-6]  # no +00:00
            self._second = (second, prefix)
        event_dict["timestamp"] = "%s.%06dZ" % (prefix, micro) if micro else prefix + "Z"  # noqa: UP031
        return event_dict


def _only_handler(logger: logging.Logger, levelno: int) -> RedactingHandler | None:
    """Our handler when it is the one handler a record of ``logger`` at ``levelno`` would be given to, with
    no filter on the way (``Logger.handle`` and ``callHandlers``); else None: pytest's capture handler, say,
    or a handler someone added to one of our loggers, gets its record the stdlib way."""
    if logger.filters:
        return None
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not RedactingHandler:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if found is None or found.filters or levelno < found.level:
        return None
    return found if isinstance(found.formatter, LineFormatter) else None


def _between(processors: Iterable[Processor]) -> tuple[Processor, ...] | None:
    """The processors the direct way runs, for the chain ``configure_logging`` sets (else None): all but the
    level filter (asked of the logger instead), ``wrap_for_formatter`` (no record is made) and the two that
    do nothing without their key (``positional_args``, ``stack_info``: such a line goes the other way)."""
    chain = list(processors)
    if (
        len(chain) < 2
        or chain[0] is not filter_by_level
        or chain[-1] is not ProcessorFormatter.wrap_for_formatter
    ):
        return None
    idle = (PositionalArgumentsFormatter, StackInfoRenderer)
    return tuple(p for p in chain[1:-1] if not isinstance(p, idle))


def _direct(name: str, levelno: int) -> Callable[..., Any]:
    """``DirectBoundLogger``'s method ``name``, logging at ``levelno``."""

    def method(self: DirectBoundLogger, event: str | None = None, *args: Any, **kw: Any) -> Any:
        std: logging.Logger = self._logger
        between = self._between
        if args or between is None:
            return self._proxy_to_logger(name, event, *args, **kw)
        if not std.isEnabledFor(levelno):
            return None  # filter_by_level raises DropEvent, or Logger.<level> returns
        handler = _only_handler(std, levelno)
        context = self._context
        event_dict: Any = {**context, **kw} if context else kw  # kw is this call's own dict
        if handler is None or "stack_info" in event_dict or "positional_args" in event_dict:
            return self._proxy_to_logger(name, event, *args, **kw)
        if event is not None:
            event_dict["event"] = event
        try:
            for processor in between:
                event_dict = processor(std, name, event_dict)
        except structlog.DropEvent:
            return None
        handler.emit_event(std, name, levelno, event_dict)
        return None

    method.__name__ = method.__qualname__ = name
    return method


class DirectBoundLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib bound logger, writing our lines straight to our handler when it alone would get
    them (``_only_handler``): the way through ``logging`` was about half of a line's cost.

    The line is the same: the level is decided as ``filter_by_level`` and then ``Logger.<level>`` decide it
    (``isEnabledFor``), the same processors make the same event dict (``_between``), and the handler writes
    what its formatter's ``format`` would. Anything else goes structlog's way: positional arguments,
    ``exception`` and ``log``, a ``stack_info`` (its frames would differ), another handler or a filter on
    the way, a processor chain not made by ``configure_logging``."""

    def __init__(self, logger: Any, processors: Iterable[Processor], context: Any) -> None:
        super().__init__(logger, processors, context)
        self._between = _between(processors)

    debug = _direct("debug", logging.DEBUG)
    info = _direct("info", logging.INFO)
    warning = _direct("warning", logging.WARNING)
    warn = warning
    error = _direct("error", logging.ERROR)
    critical = _direct("critical", logging.CRITICAL)
