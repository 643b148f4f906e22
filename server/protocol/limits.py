"""Every limit of docs/protocol.md section 6 in one frozen dataclass.

Each default is safe for an untrusted peer on a shared host; each is announced to the client
under ``limits`` in the server's settings and in ``capabilities``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: Payload size every receiver accepts unless it announced another (docs/protocol.md section 1).
DEFAULT_MAX_FRAME_SIZE = 32768
#: Smallest and largest ``max_frame_size`` a client may ask for.
MIN_CLIENT_FRAME_SIZE = 1024
MAX_FRAME_SIZE_LIMIT = 1 << 20
#: Largest zstd window a decoder accepts (the ``zstd-8mb`` profile).
MAX_WINDOW_LOG = 23
MAX_WINDOW_SIZE = 1 << MAX_WINDOW_LOG


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    # 32 KiB, Mercurial's frame size: small enough to interleave streams finely, large enough
    # that the 8-byte header costs 0.02%. A server may raise it to 1 MiB.
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    # Open client streams per connection. Each stream may pin a ~9.5 MiB zstd context on a
    # worker, so 64 streams is ~600 MiB per connection at worst; more parallelism than any
    # host here has cores.
    max_streams: int = 64
    # Requests in flight per connection: enough to pipeline deeply on every stream, small
    # enough that queued request maps and data stay bounded.
    max_inflight: int = 256
    # Per stream: a stream is served serially by one worker, so deeper queues only add latency.
    max_inflight_per_stream: int = 32
    # A command-request map is a name and a few arguments; 64 KiB is generous and bounds
    # assembly buffers.
    max_request_map_bytes: int = 65536
    # 64 MiB of (decoded) command data per request: large objects, still a bounded buffer.
    max_request_data_bytes: int = 64 << 20
    # A 32 KiB encoded frame decoding to more than 1 MiB (a 32x ratio) is either a bomb or
    # pathological data; bounds what one frame can make a worker allocate.
    max_decoded_bytes_per_frame: int = 1 << 20
    # Level 19 is already ~50x slower than level 3; higher levels would let a client flood a
    # worker's CPU. Client wishes are clamped to this.
    max_level: int = 19
    # Connections per server: each costs a few buffers; bounded to survive connection floods.
    max_connections: int = 1024
    # Seconds a connection may stay silent with nothing in flight before it is closed.
    idle_timeout_s: float = 60
    # Seconds to complete a frame once its first byte arrived (slowloris protection).
    frame_timeout_s: float = 30
    # Streams a worker keeps contexts for; beyond it the least recently used one is evicted.
    max_contexts_per_worker: int = 256
    # 2 GiB of contexts per worker (~200 warm level-3 streams with an 8 MiB window).
    max_context_bytes_per_worker: int = 2 << 30

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limit {field.name} must be a positive number, got {value!r}")
        if not DEFAULT_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(
                f"limit max_frame_size must be in [{DEFAULT_MAX_FRAME_SIZE}, "
                f"{MAX_FRAME_SIZE_LIMIT}], got {self.max_frame_size}"
            )
        if self.max_inflight_per_stream > self.max_inflight:
            raise ValueError("limit max_inflight_per_stream exceeds max_inflight")

    def to_wire(self) -> dict[str, Any]:
        """The ``limits`` map announced to clients (docs/protocol.md section 3)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Limits:
        """Build from a config mapping; unknown keys are an error (a typo must not pass)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(unknown)}")
        return cls(**values)
