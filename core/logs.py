"""Logging for every process: plain text or one JSON object per line, with the request id."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Optional

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Attributes every record has, plus the ones Ray's handlers add: not repeated as extras.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "_ray_timestamp_ns"}


class JsonFormatter(logging.Formatter):
    """json.dumps escapes newlines and control characters, so a value cannot forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k != "request_id"})
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        message = json.dumps(record.getMessage())[1:-1]  # escaped: no forged lines
        base = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        rid = extras.pop("request_id", None) or request_id_var.get()
        tail = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extras.items())
        return f"{base} request_id={rid} {tail}".rstrip()


def configure_logging(level: str = "INFO", fmt: str = "text", log_dir: Optional[str] = None) -> None:
    """Idempotent: our loggers (`aicore.*`) get one stream handler in the chosen format, and with
    `log_dir` also a file handler appending to `<log_dir>/aicore.log` (every process, one line
    per record; WatchedFileHandler reopens the file after logrotate moves it)."""
    logger = logging.getLogger("aicore")
    logger.setLevel(level.upper())
    logger.propagate = False
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(Path(log_dir) / "aicore.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    logger.handlers = handlers
