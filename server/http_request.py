"""The head of an HTTP/1.1 request, parsed strictly (no I/O): the request line, the header
fields and the body's ``Content-Length``. Anything malformed is an :class:`HttpError` with
status 400; nothing here may raise anything else on any input.
"""

from __future__ import annotations

import dataclasses
import re

#: A header field name: an RFC 9110 token (no spaces, no colon, ASCII only).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A Content-Length value: ASCII digits only (str.isdigit also accepts '١٢' and '²').
_DIGITS = re.compile(r"[0-9]+")
#: Digits past which a length is certainly over any body limit (int() is not even tried).
_MAX_LENGTH_DIGITS = 18
#: What a Content-Length of more digits than _MAX_LENGTH_DIGITS counts as.
HUGE_LENGTH = 10**_MAX_LENGTH_DIGITS


class HttpError(Exception):
    """An HTTP error answer: status, reason, a text message and extra headers."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = headers


def http_error(status: int, reason: str, message: str, **headers: str) -> HttpError:
    return HttpError(status, reason, message, headers)


def _bad(message: str) -> HttpError:
    return http_error(400, "Bad Request", message)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    #: Field names in lower case; a repeated field keeps its last value, except
    #: Content-Length, whose every value is kept in ``content_lengths``.
    headers: dict[str, str]
    content_lengths: tuple[str, ...] = ()


def parse_head(raw: bytes) -> RequestHead:
    """Parse the request line and header fields (``raw`` ends with the blank line)."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[2].startswith("HTTP/1."):
        raise _bad("malformed request line")
    headers: dict[str, str] = {}
    lengths: list[str] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also a folded line or "Name :"
            raise _bad("malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        if key == "content-length":
            lengths.append(value)
        headers[key] = value
    return RequestHead(parts[0], parts[1], headers, tuple(lengths))


def content_length(values: tuple[str, ...] | list[str]) -> int:
    """The body length stated by the Content-Length fields (0 without one).

    Each field may hold a comma-separated list; every member must be ASCII digits and all
    members must be equal (RFC 9112 section 6.3): anything else is a 400. A length of more
    than 18 digits is returned as :data:`HUGE_LENGTH`, for the caller's size check.
    """
    members = [m.strip(" \t") for value in values for m in value.split(",")]
    if not members:
        return 0
    lengths: set[int] = set()
    for member in members:
        if not _DIGITS.fullmatch(member):
            raise _bad("bad Content-Length")
        significant = member.lstrip("0")
        if len(significant) > _MAX_LENGTH_DIGITS:
            lengths.add(HUGE_LENGTH)
        else:
            lengths.add(int(significant or "0"))
    if len(lengths) != 1:
        raise _bad("conflicting Content-Length values")
    return lengths.pop()
