r"""The human notation of frames: one frame per line, for test vectors, captures and debugging.

A line has six fields separated by whitespace, the last one optional::

    <request-id> <stream-id> <stream-flags> <type> <flags> [<payload>]

    1 1 begin command-request new msgpack:{"name": "get", "args": {"key": "a.txt"}}
    1 2 begin|encoded command-response eos 0x28b52ffd...
    0 1 end stream-settings eos

It is the notation of Mercurial's frame-based wire protocol (``1 1 0 1 0`` is a frame), with
zplex's names. It describes the structure of a frame, not whether the protocol allows it: any
header the 8 bytes can hold can be written, so malformed frames can be written too.

Fields:

* ``request-id`` (0-65535) and ``stream-id`` (0-255): numbers, decimal or ``0x`` hex.
* ``stream-flags``: ``0``, or names among ``begin``, ``end``, ``encoded`` joined by ``|``
  (``begin|encoded``). A number (decimal or ``0x`` hex) may stand for any bits, alone or
  among the names (``begin|0x8``). Mercurial's ``stream-begin`` and ``stream-end`` are accepted.
* ``type``: a frame type by its wire name (``command-request``, ``command-data``,
  ``command-response``, ``error-response``, ``text-output``, ``progress``,
  ``sender-protocol-settings``, ``stream-settings``) or a number 0-15 (reserved types can only
  be written as numbers: ``0x4``).
* ``flags``: ``0``, or the names of that type's flags joined by ``|``: ``new``,
  ``continuation``, ``more``, ``have-data`` for command-request; ``continuation``, ``eos``
  for command-data, command-response and both settings types; none for error-response,
  text-output and progress. Numbers (0-15) are accepted as for stream flags.
* ``payload``: the rest of the line, absent for an empty payload. Its first characters decide
  how it is read:

  - ``0x<hex>`` or ``hex:<hex>``: hex digits; whitespace between them is ignored.
  - ``b'...'`` or ``b"..."``: a Python bytes literal (any other literal is refused).
  - ``msgpack:<literal>``: a Python literal (a dict or list, usually) packed with the core's
    MessagePack ``pack``: ``msgpack:{"name": "echo", "args": {}}``.
  - ``#``: a comment; the payload is empty.
  - anything else: text, encoded as UTF-8, with Python backslash escapes (``\n``, ``\t``,
    ``\r``, ``\0``, ``\\``, ``\'``, ``\"``, ``\xHH``): ``foo`` is ``b"foo"``, as in
    Mercurial. Surrounding whitespace is not part of it; the text runs to the end of the line,
    ``#`` included. Write text that would start like one of the forms above as a literal.

  After a hex, literal or ``msgpack:`` payload, ``#`` starts a comment that runs to the end of
  the line, so the annotated output of ``zplex frames decode`` reads back as the same frames.

Printing (:func:`format_frame`) is canonical and round-trips through :func:`parse_line`: ids in
decimal; names for known types and flags, in bit order, and ``0x`` hex for reserved types and
undefined bits; the payload as a ``b'...'`` literal when every byte is printable ASCII
(``0x20``-``0x7e``), else as ``0x`` followed by its hex digits, and nothing when it is empty.
Every frame has exactly one printed form, so printed lines can be compared as text.

:func:`parse_lines` reads many lines, skipping blank lines and lines whose first non-blank
character is ``#``. Errors raise :class:`NotationError` (a ``ValueError``).
"""

from __future__ import annotations

import ast
import enum
import string

from .frames import FLAG_TYPES, MAX_PAYLOAD_FIELD, Frame, FrameType, StreamFlags
from .payloads import pack

__all__ = ["NotationError", "format_frame", "format_payload", "parse_line", "parse_lines"]


class NotationError(ValueError):
    """A line that is not valid frame notation."""


_STREAM_FLAG_NAMES: dict[str, int] = {
    "begin": int(StreamFlags.BEGIN),
    "end": int(StreamFlags.END),
    "encoded": int(StreamFlags.ENCODED),
}
#: Mercurial's spellings, accepted when parsing, never printed.
_STREAM_FLAG_ALIASES: dict[str, int] = {
    "stream-begin": int(StreamFlags.BEGIN),
    "stream-end": int(StreamFlags.END),
}
_TYPE_NAMES: dict[str, int] = {t.wire_name: int(t) for t in FrameType}


def _flag_names(flag_type: type[enum.IntFlag]) -> dict[str, int]:
    names: dict[str, int] = {}
    for member in flag_type:
        assert member.name is not None
        names[member.name.lower().replace("_", "-")] = int(member)
    return names


_TYPE_FLAG_NAMES: dict[int, dict[str, int]] = {
    int(ftype): _flag_names(flag_type) for ftype, flag_type in FLAG_TYPES.items()
}

_PRINTABLE = frozenset(range(0x20, 0x7F))
_HEX_DIGITS = frozenset(string.hexdigits)
_SIMPLE_ESCAPES = {
    "n": b"\n",
    "t": b"\t",
    "r": b"\r",
    "0": b"\0",
    "\\": b"\\",
    "'": b"'",
    '"': b'"',
}


# ---- parsing ------------------------------------------------------------------------------


def _number(token: str, what: str, maximum: int) -> int:
    try:
        value = int(token, 16) if token.lower().startswith("0x") else int(token, 10)
    except ValueError:
        raise NotationError(f"{what}: {token!r} is not a number") from None
    if not 0 <= value <= maximum:
        raise NotationError(f"{what}: {value} is out of range [0, {maximum}]")
    return value


def _is_number(token: str) -> bool:
    return token[:1].isdigit()


def _flags(token: str, what: str, names: dict[str, int], maximum: int) -> int:
    value = 0
    for part in token.split("|"):
        if not part:
            raise NotationError(f"{what}: empty flag in {token!r}")
        if _is_number(part):
            value |= _number(part, what, maximum)
        elif part.lower() in names:
            value |= names[part.lower()]
        else:
            known = ", ".join(sorted(names)) or "none"
            raise NotationError(f"{what}: unknown flag {part!r} (known: {known})")
    return value


def _frame_type(token: str) -> int:
    if _is_number(token):
        return _number(token, "type", 0xF)
    value = _TYPE_NAMES.get(token.lower())
    if value is None:
        raise NotationError(f"type: unknown frame type {token!r}")
    return value


def _strip_comment(text: str) -> str:
    index = text.find("#")
    return text if index < 0 else text[:index]


def _hex_payload(text: str) -> bytes:
    digits = "".join(_strip_comment(text).split())
    bad = next((c for c in digits if c not in _HEX_DIGITS), None)
    if bad is not None:
        raise NotationError(f"payload: {bad!r} is not a hex digit")
    if len(digits) % 2:
        raise NotationError("payload: odd number of hex digits")
    return bytes.fromhex(digits)


def _literal(text: str, what: str) -> object:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise NotationError(f"payload: {what} is not a Python literal ({exc})") from None


def _unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char != "\\":
            j = text.find("\\", i)
            j = n if j < 0 else j
            out += text[i:j].encode("utf-8")
            i = j
            continue
        if i + 1 >= n:
            raise NotationError("payload: text ends with a lone backslash")
        code = text[i + 1]
        if code in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[code]
            i += 2
        elif code == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or any(c not in _HEX_DIGITS for c in digits):
                raise NotationError(f"payload: bad escape {text[i : i + 4]!r}")
            out.append(int(digits, 16))
            i += 4
        else:
            raise NotationError(f"payload: unknown escape {text[i : i + 2]!r}")
    return bytes(out)


def _payload(text: str) -> bytes:
    text = text.strip()
    lowered = text.lower()
    if not text or text.startswith("#"):
        return b""
    if lowered.startswith("0x"):
        return _hex_payload(text[2:])
    if lowered.startswith("hex:"):
        return _hex_payload(text[4:])
    if lowered.startswith("msgpack:"):
        value = _literal(text[8:], "msgpack")
        try:
            return pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise NotationError(f"payload: cannot pack {type(value).__name__} ({exc})") from None
    if text[:2] in ("b'", 'b"', "B'", 'B"'):
        value = _literal(text, "bytes literal")
        if not isinstance(value, bytes):
            raise NotationError("payload: only bytes literals are accepted")
        return value
    return _unescape(text)


def parse_line(line: str) -> Frame:
    """Parse one line of notation into a :class:`Frame` (see the module docstring)."""
    fields = line.split(None, 5)
    if len(fields) < 5:
        raise NotationError(
            "expected <request-id> <stream-id> <stream-flags> <type> <flags> [<payload>]"
        )
    request_id = _number(fields[0], "request id", 0xFFFF)
    stream_id = _number(fields[1], "stream id", 0xFF)
    all_stream_flags = _STREAM_FLAG_NAMES | _STREAM_FLAG_ALIASES
    stream_flags = _flags(fields[2], "stream flags", all_stream_flags, 0xFF)
    ftype = _frame_type(fields[3])
    flags = _flags(fields[4], "flags", _TYPE_FLAG_NAMES.get(ftype, {}), 0xF)
    payload = _payload(fields[5]) if len(fields) > 5 else b""
    if len(payload) > MAX_PAYLOAD_FIELD:
        raise NotationError(f"payload of {len(payload)} bytes does not fit the length field")
    return Frame(request_id, stream_id, stream_flags, ftype, flags, payload)


def parse_lines(text: str) -> list[Frame]:
    """Parse every line of ``text``, skipping blank lines and ``#`` comment lines. An error
    names its line number (from 1)."""
    frames: list[Frame] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            frames.append(parse_line(stripped))
        except NotationError as exc:
            raise NotationError(f"line {number}: {exc}") from None
    return frames


# ---- printing -----------------------------------------------------------------------------


def _format_flags(value: int, names: dict[str, int]) -> str:
    if value == 0:
        return "0"
    parts: list[str] = []
    rest = value
    for name, bit in sorted(names.items(), key=lambda item: item[1]):
        if value & bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(f"0x{rest:x}")
    return "|".join(parts)


def format_payload(payload: bytes) -> str:
    """The canonical payload field: ``b'...'`` when printable ASCII, else ``0x`` hex, and
    the empty string for an empty payload."""
    if not payload:
        return ""
    if all(byte in _PRINTABLE for byte in payload):
        return repr(bytes(payload))
    return "0x" + payload.hex()


def format_frame(frame: Frame) -> str:
    """The canonical notation of ``frame``; ``parse_line(format_frame(f)) == f``."""
    try:
        type_field = FrameType(frame.type).wire_name
    except ValueError:
        type_field = f"0x{frame.type:x}"
    fields = [
        str(frame.request_id),
        str(frame.stream_id),
        _format_flags(frame.stream_flags, _STREAM_FLAG_NAMES),
        type_field,
        _format_flags(frame.flags, _TYPE_FLAG_NAMES.get(frame.type, {})),
    ]
    payload = format_payload(frame.payload)
    if payload:
        fields.append(payload)
    return " ".join(fields)
