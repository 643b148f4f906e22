"""Batches: each ZeroMQ message carries every message one side produced in one turn of its
loop, so the per-message cost of ZeroMQ is paid once per batch. A message is a part count
(u8), then each part as a u32 length and its bytes."""

from __future__ import annotations

import struct

_COUNT = struct.Struct("<B")
_LENGTH = struct.Struct("<I")


def encode_message(parts: list[bytes]) -> bytes:
    out = [_COUNT.pack(len(parts))]
    for part in parts:
        out.append(_LENGTH.pack(len(part)))
        out.append(part)
    return b"".join(out)


def decode_batch(blob: bytes) -> list[list[bytes]]:
    """The messages of a batch; ValueError if it is truncated."""
    messages: list[list[bytes]] = []
    offset = 0
    end = len(blob)
    try:
        while offset < end:
            (count,) = _COUNT.unpack_from(blob, offset)
            offset += 1
            parts: list[bytes] = []
            for _ in range(count):
                (size,) = _LENGTH.unpack_from(blob, offset)
                offset += 4
                if offset + size > end:
                    raise ValueError("truncated batch")
                parts.append(blob[offset : offset + size])
                offset += size
            messages.append(parts)
    except struct.error:
        raise ValueError("truncated batch") from None
    return messages


class Batch:
    """Messages waiting to go out as one ZeroMQ message."""

    __slots__ = ("records", "size")

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.size = 0

    def add(self, parts: list[bytes]) -> None:
        record = encode_message(parts)
        self.records.append(record)
        self.size += len(record)

    def take(self) -> bytes:
        blob = b"".join(self.records)
        self.records.clear()
        self.size = 0
        return blob
