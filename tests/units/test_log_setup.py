"""Every process's logging: text or one JSON object a line, with its role and index and the
line's structured fields; the banner shows whatever the level."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from server.logs import banner, setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    banner.setLevel(logging.NOTSET)


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("WARNING", "json", "worker", 3)
    log = logging.getLogger("zplex.test")
    log.warning("connection %d: %s", 7, "dropped", extra={"conn": 7, "code": "protocol"})
    log.info("not shown")
    banner.info("zplex serving on %s", "here")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "WARNING"
    assert first["role"] == "worker" and first["index"] == 3
    assert first["message"] == "connection 7: dropped"
    assert first["conn"] == 7 and first["code"] == "protocol"
    assert "time" in first
    assert lines[1]["message"] == "zplex serving on here" and lines[1]["level"] == "INFO"


def test_text_lines_and_the_banner_at_error_level(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("ERROR", "text", "front", 1)
    logging.getLogger("zplex.test").warning("not shown")
    banner.info("zplex serving")
    err = capsys.readouterr().err
    assert "not shown" not in err
    assert " front1 INFO zplex serving" in err
    setup_logging("INFO", "text", "worker")  # a remote worker: no index
    logging.getLogger("zplex.test").info("joined")
    assert " worker INFO joined" in capsys.readouterr().err
