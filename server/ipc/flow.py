"""Per-stream flow control between the front and a worker.

A worker sends at most :data:`STREAM_CREDIT_BYTES` of a stream's response bytes ahead of
what the front has written to the client (:class:`SendWindow`, on the worker). The front
counts what it wrote (:class:`OwedCredit`) and grants it back in grants of at least
:data:`CREDIT_GRANT_BYTES` while the client reads; a client that stops reading gets no
grants, so only its own streams pause, and it is granted all it is owed when it reads again.
"""

from __future__ import annotations

import struct

#: A stream's window: with max_streams (64) streams, 128 MiB per connection at most, which is
#: the default max_output_buffer_bytes, so a client that reads is never dropped for it.
STREAM_CREDIT_BYTES = 2 << 20
CREDIT_GRANT_BYTES = 512 << 10
_CREDIT = struct.Struct("<Q")


def encode_credit(amount: int) -> bytes:
    return _CREDIT.pack(amount)


def decode_credit(data: bytes) -> int:
    """ValueError for a part that is not a credit."""
    try:
        (amount,) = _CREDIT.unpack(data)
    except struct.error:
        raise ValueError("not a credit") from None
    return int(amount)


class SendWindow:
    """The worker's side: how many more bytes a stream may send."""

    __slots__ = ("available",)

    def __init__(self, available: int = STREAM_CREDIT_BYTES) -> None:
        self.available = available

    @property
    def is_open(self) -> bool:
        return self.available > 0

    def consume(self, sent: int) -> None:
        self.available -= sent

    def grant(self, amount: int) -> None:
        self.available += amount


class OwedCredit:
    """The front's side: bytes of a stream written to the client and not yet granted back."""

    __slots__ = ("owed",)

    def __init__(self) -> None:
        self.owed = 0

    def wrote(self, written: int, client_reading: bool) -> int:
        """Count bytes written to the client; the grant to send now (0: none yet)."""
        self.owed += written
        if self.owed >= CREDIT_GRANT_BYTES and client_reading:
            return self.take()
        return 0

    def take(self) -> int:
        """Everything owed, as one grant (when the client reads again)."""
        owed, self.owed = self.owed, 0
        return owed
