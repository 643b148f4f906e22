"""How every process of the server logs (the supervisor, the fronts, the workers, ``zplex
worker``): text lines by default, or with ``--log-format json`` one JSON object a line
(python-json-logger) with ``time`` (UTC, ISO 8601), ``level``, ``role`` and ``index`` of the
process, ``message``, and the structured fields a line carries (``extra=``: ``conn`` the
connection id, ``code`` an error code, ...).

Lifecycle lines (serving on ..., a process replaced, shutting down) are INFO. The start
banner goes to :data:`banner`, which shows whatever the log level. A leaf module: the
workers import it too.
"""

from __future__ import annotations

import logging
import sys

#: The start banner's logger: INFO, shown whatever the level of the rest.
banner = logging.getLogger("zplex.banner")


class ProcessFields(logging.Filter):
    """Adds the process's ``role`` and ``index`` to every record."""

    def __init__(self, role: str, index: int | None) -> None:
        super().__init__()
        self.role = role
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.index = self.index
        return True


def formatter(log_format: str, role: str, index: int | None) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(levelname)s %(role)s %(index)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    name = role if index is None else f"{role}{index}"
    return logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s")


def setup_logging(level: str, log_format: str, role: str, index: int | None = None) -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``), as process
    ``role`` ``index``; replaces whatever handlers the root logger had."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ProcessFields(role, index))
    handler.setFormatter(formatter(log_format, role, index))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    banner.setLevel(logging.INFO)
