"""Front <-> worker messages: envelopes and batches."""

from __future__ import annotations

import pytest

from server.ipc import Batch, Envelope, Flag, Kind, StreamParams, decode_batch


def test_ipc_batches_round_trip() -> None:
    batch = Batch()
    messages = [[b"env1", b"", b"x" * 70000], [b"env2"], [b"e", b"a", b"b", b"c"]]
    for message in messages:
        batch.add(message)
    blob = batch.take()
    assert decode_batch(blob) == messages
    assert batch.take() == b""
    with pytest.raises(ValueError):
        decode_batch(blob[:-1])


def test_envelope_round_trip() -> None:
    env = Envelope(Kind.FRAMES, Flag.DONE | Flag.STREAM_OPEN, 4_000_000_000, 65535, 255)
    assert Envelope.unpack(env.pack()) == env


def test_stream_params_round_trip() -> None:
    params = StreamParams("zstd-8mb", 3, "stream", 32768, True)
    assert StreamParams.from_wire(params.to_wire()) == params
