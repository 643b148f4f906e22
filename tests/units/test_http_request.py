"""The strict parsing of an HTTP request's head (server/http_request.py), without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.http_request import HUGE_LENGTH, HttpError, content_length, parse_head


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], 0),
        (["0"], 0),
        (["12"], 12),
        (["007"], 7),
        (["12", "12"], 12),  # the same value repeated
        (["12, 12"], 12),  # as a list in one field
        (["12,12", "012"], 12),
        (["0" * 40 + "5"], 5),
        (["9" * 18], 10**18 - 1),
        (["1" * 19], HUGE_LENGTH),
        (["1" * 5000], HUGE_LENGTH),  # int() would refuse this many digits
    ],
)
def test_valid_content_length(values: list[str], expected: int) -> None:
    assert content_length(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["\u0661\u0662"],  # Arabic-Indic digits: str.isdigit() is true, int() even accepts them
        ["\u00b2"],  # superscript two: isdigit() true, int() raises
        ["\uff15"],  # fullwidth five
        ["+5"],
        ["-5"],
        ["1 2"],
        ["1\t2"],
        [""],
        ["0x10"],
        ["1e3"],
        ["5.0"],
        ["5,"],
        [",5"],
        ["5,,5"],
        ["5", "6"],  # two different values
        ["5, 6"],
        ["5", ""],
    ],
)
def test_malformed_content_length_is_400(values: list[str]) -> None:
    with pytest.raises(HttpError) as info:
        content_length(values)
    assert info.value.status == 400


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_parse_head() -> None:
    parsed = parse_head(
        head("POST /api/x HTTP/1.1", "Host: a", "Content-Length: 5", "content-length:5", "X-A:  b ")
    )
    assert (parsed.method, parsed.target) == ("POST", "/api/x")
    assert parsed.headers["x-a"] == "b" and parsed.headers["host"] == "a"
    assert parsed.content_lengths == ("5", "5")
    assert content_length(parsed.content_lengths) == 5


@pytest.mark.parametrize(
    "raw",
    [
        head("POST /api/x"),
        head("POST /api/x HTTP/2"),
        head(" /api/x HTTP/1.1"),
        head("POST /a b HTTP/1.1"),
        head("POST /api/x HTTP/1.1", "no colon"),
        head("POST /api/x HTTP/1.1", "Content-Length : 5"),  # space before the colon
        head("POST /api/x HTTP/1.1", "X-A: b", " folded"),  # obsolete line folding
        head("POST /api/x HTTP/1.1", ": empty name"),
        head("POST /api/x HTTP/1.1", "Cont\u00e9nt-Length: 5"),
    ],
)
def test_malformed_head_is_400(raw: bytes) -> None:
    with pytest.raises(HttpError) as info:
        parse_head(raw)
    assert info.value.status == 400


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_content_length_never_raises_anything_else(values: list[str]) -> None:
    try:
        length = content_length(values)
    except HttpError as exc:
        assert exc.status == 400
    else:
        assert 0 <= length <= HUGE_LENGTH


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_head_never_raises_anything_else(raw: bytes) -> None:
    try:
        parsed = parse_head(raw + b"\r\n\r\n")
        content_length(parsed.content_lengths)
    except HttpError as exc:
        assert exc.status == 400
