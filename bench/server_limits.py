"""The bench's settings against the limits the server announced (its settings frame): a
run the server would refuse fails before it starts, naming the flag and the limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.config import BenchConfig, BenchError


def check_limits(c: BenchConfig, limits: Mapping[str, Any]) -> None:
    """:class:`BenchError` if a flag exceeds one of the server's ``limits``."""
    max_streams = int(limits.get("max_streams", 64))
    per_stream = int(limits.get("max_inflight_per_stream", 32))
    per_conn = int(limits.get("max_inflight", 256))
    max_level = limits.get("max_level")
    if c.encoding != "identity" and isinstance(max_level, int) and c.level > max_level:
        raise BenchError(f"--level {c.level} exceeds the server's max_level ({max_level})")
    if c.streams > max_streams:
        raise BenchError(f"-s {c.streams} exceeds the server's max_streams ({max_streams})")
    if c.rate is None and c.window > per_stream:
        raise BenchError(
            f"--window {c.window} exceeds the server's max_inflight_per_stream ({per_stream})"
        )
    if c.rate is None and c.window * c.streams > per_conn:
        raise BenchError(
            f"--window x -s = {c.window * c.streams} exceeds the server's max_inflight "
            f"({per_conn}) per connection"
        )
