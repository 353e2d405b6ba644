"""The one place that configures log handlers: `event key=value ...` lines on stderr.

Messages are fixed dotted event names (`stream.opened`); what varies travels
in `extra=` and is printed as key=value pairs after the name.
"""

import json
import logging
import sys
from typing import TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
STANDARD_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
) | {"message", "asctime", "color_message", "taskName"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}"
            f" {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        )
        fields = [
            f"{key}={format_value(value)}"
            for key, value in vars(record).items()
            if key not in STANDARD_RECORD_FIELDS
        ]
        if fields:
            line += " " + " ".join(fields)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted.

    A handler bound to the stream of the moment would keep writing to it
    after a test runner or a daemonising wrapper has swapped and closed it.
    """

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines (LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD_RECORD_FIELDS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class IncompleteResponseIsWarning(logging.Filter):
    """uvicorn logs a response the app did not finish as an ERROR. Here that
    only happens when a stream drops a client whose sends timed out, which
    the stream has already logged as a warning; it is not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(INCOMPLETE_RESPONSE):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


INCOMPLETE_RESPONSE = "ASGI callable returned without completing response"


def format_value(value: object) -> str:
    text = str(value)
    if text == "" or any(char.isspace() or char in '"=' for char in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send our logs, uvicorn's, SQLAlchemy's and asyncpg's through one formatter."""
    handler = CurrentStderrHandler()
    formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
    handler.setFormatter(formatter)

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    # uvicorn installs its own handlers; hand its records to the root instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(
        isinstance(f, IncompleteResponseIsWarning) for f in uvicorn_errors.filters
    ):
        uvicorn_errors.addFilter(IncompleteResponseIsWarning())

    # Per-statement SQL and per-request client lines at INFO would drown the
    # service's own lines; sse-starlette logs every chunk, payloads included,
    # at DEBUG, and payloads are customer data; pgserver narrates each step.
    for name in ("sqlalchemy.engine", "httpx", "sse_starlette", "pgserver"):
        logging.getLogger(name).setLevel(logging.WARNING)
