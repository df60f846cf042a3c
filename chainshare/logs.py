"""Structured logging: JSON lines when stderr is not a terminal, short text when it is."""

from __future__ import annotations

import json
import logging
import sys
import time


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict) else ""
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{ts} {record.levelname.lower():7} {record.name}: {record.getMessage()} {extra}".rstrip()


def configure_logging(level: str = "info", node_name: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TextFormatter() if sys.stderr.isatty() else _JsonFormatter())
    root = logging.getLogger("chainshare")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def log_event(logger: logging.Logger, level: int, msg: str, **fields: object) -> None:
    """Log ``msg`` with structured ``fields`` (never pass secrets here)."""
    logger.log(level, msg, extra={"fields": fields})
