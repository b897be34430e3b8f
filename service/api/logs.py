"""JSON log lines, each carrying the id of the request being served.

The request id lives in a context variable set by the request middleware; contextvars follow
the request into the threadpool where the torch work runs, so every line logged while serving
a request (access line, model errors, tracebacks) carries its id.

While serving, lines are formatted and written by a background thread (the standard library's
``QueueHandler`` and ``QueueListener``): the access line is logged right after the answer is
sent, and formatting and writing it on the event loop's thread kept that thread busy just as
the client woke to read the answer. On the 2-core machine, two pairs of serving-benchmark runs
put odecast's overhead above its least server's by 1.07 and 1.10 ms with httpx when lines were
written inline, and by 0.94 and 0.93 ms with the writer thread.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged.
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # Stamped when logged if it went through the background writer; else still current.
            "request_id": record.__dict__.get("request_id", request_id_var.get()),
        }
        entry.update({k: v for k, v in record.__dict__.items()
                      if k not in _STANDARD_ATTRS and k != "request_id"})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _ToWriterThread(QueueHandler):
    """Queues each record for the writer thread with what only the logging thread knows: the
    request id (a context variable) and the message with its arguments merged. The traceback,
    if any, travels as it is and is formatted by the writer, so it stays its own field."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.request_id = request_id_var.get()
        record.msg, record.args = record.getMessage(), None
        return record


_writer: QueueListener | None = None


def configure_logging(level: str = "INFO") -> None:
    """Send every logger (uvicorn's included) to stderr as JSON lines, written in the background."""
    global _writer
    stop_background_writer()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _writer = QueueListener(records, handler)
    _writer.start()
    atexit.register(stop_background_writer)
    root = logging.getLogger()
    root.handlers[:] = [_ToWriterThread(records)]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)  # Python warnings (numpy's, pydantic's) as JSON lines, not raw text


def stop_background_writer() -> None:
    """Write every queued line, then log straight to stderr; nothing to do if none is running.

    The app calls this when it shuts down: uvicorn ends by re-raising the signal that stopped it,
    which kills the process before exit handlers run, so lines still queued then would be lost.
    """
    global _writer
    if _writer is None:
        return
    writer, _writer = _writer, None
    writer.stop()  # returns once the thread has written everything queued before it
    logging.getLogger().handlers[:] = list(writer.handlers)
