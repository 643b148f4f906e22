"""Tests for workers.generate."""

from __future__ import annotations

import hashlib
import json

import pytest
import zstandard

from workers.generate import (
    CHUNK_BYTES,
    DEFAULT_MAX_SIZE,
    KINDS,
    GenerateError,
    generate,
    iter_generate,
)

MIB = 1024 * 1024

# zstd level-3 compression ratio bands for ~1 MiB of each kind.
RATIO_BANDS = {
    "text": (2.5, 4.0),
    "json": (4.0, 10.0),
    "log": (6.0, 15.0),
    "random": (0.95, 1.01),
    "zeros": (1000.0, float("inf")),
}


def _ratio(data: bytes) -> float:
    return len(data) / len(zstandard.ZstdCompressor(level=3).compress(data))


def test_kinds() -> None:
    assert KINDS == ("text", "json", "log", "random", "zeros")
    assert DEFAULT_MAX_SIZE == 256 * MIB
    assert issubclass(GenerateError, ValueError)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [0, 1, 2, 7, 100, 4095, 4096, 65537, MIB + 3, 3 * MIB + 1])
def test_exact_size(kind: str, size: int) -> None:
    data = generate(size, kind, seed=5)
    assert isinstance(data, bytes)
    assert len(data) == size


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind: str) -> None:
    a = generate(200_000, kind, 42)
    b = generate(200_000, kind, 42)
    assert a == b
    # Other calls in between (and other kinds) do not disturb the result.
    generate(1000, "text", 1)
    generate(1000, "log", 42)
    assert generate(200_000, kind, 42) == a


def test_default_arguments() -> None:
    assert generate(5000) == generate(5000, "text", 0)


@pytest.mark.parametrize("kind", ["text", "json", "log", "random"])
def test_seeds_differ(kind: str) -> None:
    outputs = {generate(50_000, kind, seed) for seed in (0, 1, 2, -1, -2, 2**64, -(2**64))}
    assert len(outputs) == 7


def test_zeros_are_zero() -> None:
    assert generate(10_000, "zeros", 3) == bytes(10_000)


# Pinned digests: the output must be the same on every machine and Python version. A deliberate
# change to a generator changes these (and the data every client sees for a given seed).
GOLDEN = {
    "text": "8e343ec1753fab60c0e188e4847462b5",
    "json": "ca0c4ba929bbb65da95988f26e3634e8",
    "log": "e155588fc9555a20a8fe55efcaf1fcd7",
    "random": "0ae8eb5ee0d5dfda1120f8d4cb7de403",
}


@pytest.mark.parametrize("kind", sorted(GOLDEN))
def test_golden_digests(kind: str) -> None:
    digest = hashlib.blake2b(generate(100_000, kind, 12345), digest_size=16).hexdigest()
    assert digest == GOLDEN[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_ratio_band(kind: str) -> None:
    low, high = RATIO_BANDS[kind]
    for seed in (0, 7):
        ratio = _ratio(generate(MIB, kind, seed))
        assert low <= ratio <= high, f"{kind} seed {seed}: ratio {ratio:.2f}"


def test_ratio_order() -> None:
    order = ("random", "text", "json", "log", "zeros")
    ratios = [_ratio(generate(MIB, kind, 1)) for kind in order]
    assert ratios == sorted(ratios)


def test_text_looks_like_prose() -> None:
    text = generate(100_000, "text", 3).decode("ascii")
    assert text[0].isupper()
    words = text.split()
    assert len(words) > 10_000
    assert "\n" in text
    assert ". " in text
    assert ", " in text
    # Zipf-like: the most common word is far more frequent than the median one.
    counts: dict[str, int] = {}
    for w in words:
        key = w.strip(",.;:?!-").lower()
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.values(), reverse=True)
    assert ranked[0] > 20 * ranked[len(ranked) // 2]


def test_json_records_parse() -> None:
    data = generate(200_000, "json", 9)
    lines = data.split(b"\n")[:-1]  # the last line is cut at the size boundary
    assert len(lines) > 500
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    assert {"id", "ts", "event", "user", "ok"} <= set(records[0])
    ids = [r["id"] for r in records]
    assert ids == sorted(ids)
    assert len({r["user"] for r in records}) > 100


def test_log_timestamps_increase() -> None:
    data = generate(200_000, "log", 4)
    lines = data.split(b"\n")[:-1]
    assert len(lines) > 500
    stamps = [line.split(b" ", 1)[0] for line in lines]
    assert all(len(s) == len(b"2024-01-01T00:00:00.000Z") and s.endswith(b"Z") for s in stamps)
    assert stamps == sorted(stamps)
    assert len(set(stamps)) > len(stamps) // 2
    assert any(b'" 200 ' in line for line in lines)
    assert any(b" HTTP/1.1" in line for line in lines)


@pytest.mark.parametrize(
    ("args", "kwargs", "word"),
    [
        ((-1,), {}, "size"),
        ((1.0,), {}, "size"),
        (("10",), {}, "size"),
        ((None,), {}, "size"),
        ((True,), {}, "size"),
        ((DEFAULT_MAX_SIZE + 1,), {}, "size"),
        ((11,), {"max_size": 10}, "size"),
        ((10, "binary"), {}, "kind"),
        ((10, "TEXT"), {}, "kind"),
        ((10, None), {}, "kind"),
        ((10, b"text"), {}, "kind"),
        ((10, "text", 1.5), {}, "seed"),
        ((10, "text", "1"), {}, "seed"),
        ((10, "text", None), {}, "seed"),
        ((10, "text", False), {}, "seed"),
        ((10,), {"max_size": -1}, "max_size"),
        ((10,), {"max_size": True}, "max_size"),
    ],
)
def test_validation(args: tuple[object, ...], kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(GenerateError, match=word):
        generate(*args, **kwargs)  # type: ignore[arg-type]


def test_max_size_boundary() -> None:
    assert len(generate(10, "json", max_size=10)) == 10
    assert generate(0, "random", max_size=0) == b""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [1, CHUNK_BYTES - 1, CHUNK_BYTES, 4 * MIB + 3])
def test_chunks_are_the_same_bytes(kind: str, size: int) -> None:
    """iter_generate makes the bytes of generate, a chunk at a time: every chunk but the
    last is exactly CHUNK_BYTES long."""
    chunks = list(iter_generate(size, kind, seed=11))
    assert b"".join(chunks) == generate(size, kind, seed=11)
    assert all(len(c) == CHUNK_BYTES for c in chunks[:-1]) and 0 < len(chunks[-1]) <= CHUNK_BYTES
    small = list(iter_generate(size, kind, seed=11, chunk_bytes=1000))
    assert b"".join(small) == b"".join(chunks)
    assert all(len(c) == 1000 for c in small[:-1]) and len(small[-1]) <= 1000


def test_chunks_of_nothing_and_arguments_checked_at_the_call() -> None:
    assert list(iter_generate(0, "text")) == []
    with pytest.raises(GenerateError, match="size"):
        iter_generate(11, max_size=10)  # raised before the first chunk is asked for
    with pytest.raises(GenerateError, match="kind"):
        iter_generate(10, "binary")
