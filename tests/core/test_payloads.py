"""Control payloads (MessagePack maps), limits and error codes."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from server.protocol.errors import (
    RETRYABLE_CODES,
    DecodeError,
    ErrorCode,
    LocalError,
    PayloadError,
    ProtocolError,
    RemoteError,
    RequestError,
    ZplexError,
)
from server.protocol.limits import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MAX_WINDOW_LOG,
    MAX_WINDOW_SIZE,
    MIN_CLIENT_FRAME_SIZE,
    Limits,
)
from server.protocol.payloads import (
    CONTEXTS,
    ENCODINGS,
    PROTOCOL_VERSION,
    ClientSettings,
    CommandRequest,
    ErrorResponse,
    Progress,
    ServerSettings,
    StreamSettings,
    TextOutput,
    pack,
    unpack_map,
)

# ---- pack / unpack_map ----------------------------------------------------------------------


def test_pack_uses_bin_for_bytes_and_str_for_text() -> None:
    assert pack({"a": b"x"}) == b"\x81\xa1a\xc4\x01x"
    assert msgpack.unpackb(pack({"a": "x"}), raw=False) == {"a": "x"}


def test_unpack_map_round_trip() -> None:
    value = {"name": "get", "args": {"key": "a", "n": [1, None, True]}, "b": b"\x00"}
    assert unpack_map(pack(value), "m") == value
    assert unpack_map(memoryview(pack(value)), "m") == value


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "not valid MessagePack"),
        (b"\xc1", "not valid MessagePack"),
        (pack({"a": 1})[:-1], "not valid MessagePack"),
        (pack({"a": 1}) + b"\x00", "not valid MessagePack"),  # extra data
        (pack([1, 2]), "must be a map"),
        (pack("text"), "must be a map"),
        (pack({1: "x"}), "not valid MessagePack"),  # strict_map_key refuses int keys
        (pack({b"k": "x"}), "keys must be text"),
    ],
)
def test_unpack_map_errors(payload: bytes, match: str) -> None:
    with pytest.raises(PayloadError, match=match) as info:
        unpack_map(payload, "thing")
    assert info.value.field is None
    assert info.value.code is ErrorCode.PROTOCOL


# ---- ClientSettings -------------------------------------------------------------------------


def test_client_settings_defaults() -> None:
    settings = ClientSettings.from_wire({})
    assert settings == ClientSettings()
    assert settings.encodings == ("identity",)
    assert settings.context == "stream"
    assert settings.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert settings.level is None and settings.token is None


def test_client_settings_round_trip_and_unknown_keys_ignored() -> None:
    settings = ClientSettings(
        encodings=("zstd-8mb", "zlib"), level=7, context="request", max_frame_size=1024, token="t"
    )
    wire = settings.to_wire()
    assert wire["level"] == 7 and wire["token"] == "t"
    assert ClientSettings.from_wire(unpack_map(pack(wire | {"future": [1]}), "s")) == settings
    assert "level" not in ClientSettings().to_wire()
    assert "token" not in ClientSettings().to_wire()


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ({"version": 2}, "version"),
        ({"version": "1"}, "version"),
        ({"version": True}, "version"),
        ({"encodings": "zstd-8mb"}, "encodings"),
        ({"encodings": ["zlib", 1]}, "encodings"),
        ({"level": 3.0}, "level"),
        ({"level": False}, "level"),
        ({"context": "connection"}, "context"),
        ({"context": 1}, "context"),
        ({"max_frame_size": MIN_CLIENT_FRAME_SIZE - 1}, "max_frame_size"),
        ({"max_frame_size": MAX_FRAME_SIZE_LIMIT + 1}, "max_frame_size"),
        ({"max_frame_size": "32768"}, "max_frame_size"),
        ({"token": 123}, "token"),
    ],
)
def test_client_settings_errors(wire: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as info:
        ClientSettings.from_wire(wire)
    assert info.value.field == field


@pytest.mark.parametrize("size", [MIN_CLIENT_FRAME_SIZE, 32768, MAX_FRAME_SIZE_LIMIT])
def test_client_settings_frame_size_bounds(size: int) -> None:
    assert ClientSettings.from_wire({"max_frame_size": size}).max_frame_size == size


def test_client_settings_unknown_encodings_are_kept_for_negotiation() -> None:
    assert ClientSettings.from_wire({"encodings": ["brotli", "zlib"]}).encodings == (
        "brotli",
        "zlib",
    )


# ---- ServerSettings, StreamSettings ---------------------------------------------------------


def test_server_settings_round_trip() -> None:
    limits = Limits().to_wire()
    settings = ServerSettings("zplex/0.1.0", ENCODINGS, 32768, 4, limits)
    wire = settings.to_wire()
    assert wire == {
        "version": 1,
        "server": "zplex/0.1.0",
        "encodings": ["zstd-8mb", "zlib", "identity"],
        "max_frame_size": 32768,
        "workers": 4,
        "limits": limits,
    }
    assert ServerSettings.from_wire(unpack_map(pack(wire), "s")) == settings


def test_server_settings_defaults_and_errors() -> None:
    settings = ServerSettings.from_wire({})
    assert settings.encodings == ("identity",)
    assert settings.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    with pytest.raises(PayloadError) as info:
        ServerSettings.from_wire({"limits": []})
    assert info.value.field == "limits"


def test_stream_settings_round_trip() -> None:
    for encoding in ENCODINGS:
        for context in CONTEXTS:
            settings = StreamSettings(encoding, 3, 23, context)
            assert StreamSettings.from_wire(settings.to_wire()) == settings
    assert StreamSettings("identity").to_wire() == {"encoding": "identity", "context": "stream"}
    assert StreamSettings.from_wire({"encoding": "zlib"}) == StreamSettings("zlib")


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ({}, "encoding"),
        ({"encoding": "brotli"}, "encoding"),
        ({"encoding": 1}, "encoding"),
        ({"encoding": "zlib", "context": "nope"}, "context"),
        ({"encoding": "zlib", "level": "3"}, "level"),
        ({"encoding": "zstd-8mb", "window_log": 23.0}, "window_log"),
    ],
)
def test_stream_settings_errors(wire: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as info:
        StreamSettings.from_wire(wire)
    assert info.value.field == field


# ---- CommandRequest, ErrorResponse, TextOutput, Progress ------------------------------------


def test_command_request() -> None:
    request = CommandRequest.from_wire({"name": "get", "args": {"key": "a"}, "extra": 1})
    assert request == CommandRequest("get", {"key": "a"})
    assert CommandRequest.from_wire({"name": "stats"}).args == {}
    assert CommandRequest("x").to_wire() == {"name": "x", "args": {}}


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ({}, "name"),
        ({"name": b"get"}, "name"),
        ({"name": "get", "args": [1]}, "args"),
        ({"name": "get", "args": {1: 2}}, "args"),
    ],
)
def test_command_request_errors(wire: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as info:
        CommandRequest.from_wire(wire)
    assert info.value.field == field


def test_error_response() -> None:
    error = ErrorResponse.from_wire(
        {"code": "goaway", "message": "bye", "retryable": True, "in_flight": [1, 3]}
    )
    assert error == ErrorResponse("goaway", "bye", True, {"in_flight": [1, 3]})
    assert error.known_code is ErrorCode.GOAWAY
    assert ErrorResponse("teapot", "").known_code is None
    wire = ErrorResponse(ErrorCode.NOT_FOUND, "no", details={"code": "shadowed"}).to_wire()
    assert wire == {"code": "not-found", "message": "no", "retryable": False}
    assert isinstance(wire["code"], str) and type(wire["code"]) is str
    with pytest.raises(PayloadError):
        ErrorResponse.from_wire({"message": "no code"})
    with pytest.raises(PayloadError):
        ErrorResponse.from_wire({"code": "x", "retryable": 1})


def test_text_output_and_progress() -> None:
    assert TextOutput.from_wire({"level": "warning", "message": "m"}) == TextOutput("warning", "m")
    assert TextOutput.from_wire({}) == TextOutput("info", "")
    assert TextOutput("info", "m").to_wire() == {"level": "info", "message": "m"}
    assert Progress.from_wire({"done": 5, "total": None}) == Progress(5, None)
    assert Progress.from_wire({"done": 5, "total": 9}).to_wire() == {"done": 5, "total": 9}
    with pytest.raises(PayloadError):
        Progress.from_wire({"done": "5"})
    with pytest.raises(PayloadError):
        TextOutput.from_wire({"message": 5})


def test_payload_dataclasses_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ClientSettings().level = 3  # type: ignore[misc]


# ---- limits ---------------------------------------------------------------------------------

SECTION_6_KEYS = {
    "max_frame_size",
    "max_streams",
    "max_inflight",
    "max_inflight_per_stream",
    "max_request_map_bytes",
    "max_request_data_bytes",
    "max_decoded_bytes_per_frame",
    "max_level",
    "max_connections",
    "idle_timeout_s",
    "frame_timeout_s",
    "max_contexts_per_worker",
    "max_context_bytes_per_worker",
}


def test_limits_defaults_match_protocol_md() -> None:
    assert Limits().to_wire() == {
        "max_frame_size": 32768,
        "max_streams": 64,
        "max_inflight": 256,
        "max_inflight_per_stream": 32,
        "max_request_map_bytes": 65536,
        "max_request_data_bytes": 67108864,
        "max_decoded_bytes_per_frame": 1048576,
        "max_level": 19,
        "max_connections": 1024,
        "idle_timeout_s": 60,
        "frame_timeout_s": 30,
        "max_contexts_per_worker": 256,
        "max_context_bytes_per_worker": 2147483648,
    }
    assert set(Limits().to_wire()) == SECTION_6_KEYS
    assert MAX_WINDOW_LOG == 23 and MAX_WINDOW_SIZE == 8 << 20


@pytest.mark.parametrize(
    "values",
    [
        {"max_streams": 0},
        {"max_inflight": -1},
        {"idle_timeout_s": 0.0},
        {"max_level": True},
        {"max_streams": "64"},
        {"max_frame_size": 32767},
        {"max_frame_size": MAX_FRAME_SIZE_LIMIT + 1},
        {"max_inflight": 4, "max_inflight_per_stream": 5},
    ],
)
def test_limits_validation(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Limits(**values)


def test_limits_from_mapping() -> None:
    assert Limits.from_mapping({"max_streams": 2}).max_streams == 2
    with pytest.raises(ValueError, match="max_stream"):
        Limits.from_mapping({"max_stream": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_streams = 1  # type: ignore[misc]


# ---- errors ---------------------------------------------------------------------------------


def test_error_codes_of_protocol_md() -> None:
    assert {c.value for c in ErrorCode} == {
        "bad-request",
        "unknown-command",
        "not-found",
        "forbidden",
        "too-large",
        "too-many-streams",
        "overloaded",
        "worker-lost",
        "shutting-down",
        "internal",
        "protocol",
        "goaway",
    }
    assert {ErrorCode.OVERLOADED, ErrorCode.SHUTTING_DOWN, ErrorCode.GOAWAY} == RETRYABLE_CODES


def test_error_families() -> None:
    assert ProtocolError("x").code is ErrorCode.PROTOCOL
    assert isinstance(ProtocolError("x"), RemoteError)
    assert PayloadError("x", field="f").code is ErrorCode.PROTOCOL
    assert isinstance(PayloadError("x"), ProtocolError)
    assert DecodeError("x").code is ErrorCode.TOO_LARGE
    assert isinstance(DecodeError("x"), RemoteError)
    assert LocalError("boom").code is ErrorCode.INTERNAL
    assert not isinstance(LocalError("boom"), RemoteError)
    assert isinstance(LocalError("boom"), ZplexError)
    assert ZplexError("x", code=ErrorCode.FORBIDDEN).code is ErrorCode.FORBIDDEN
    assert ProtocolError("safe message").message == "safe message"


def test_request_error_retryable() -> None:
    assert RequestError(ErrorCode.OVERLOADED, "busy").retryable
    assert not RequestError(ErrorCode.NOT_FOUND, "no").retryable
    assert RequestError(ErrorCode.WORKER_LOST, "lost", retryable=True).retryable
    assert not RequestError(ErrorCode.WORKER_LOST, "lost", retryable=False).retryable
    assert RequestError(ErrorCode.WORKER_LOST, "lost").code is ErrorCode.WORKER_LOST
    assert PROTOCOL_VERSION == 1


def test_nil_means_absent_for_optional_fields() -> None:
    # docs/protocol.md: progress is {"done": int, "total": int or nil}.
    assert Progress.from_wire(unpack_map(pack(Progress(3).to_wire()), "p")) == Progress(3, None)
    assert ClientSettings.from_wire({"level": None, "token": None}) == ClientSettings()
    assert StreamSettings.from_wire({"encoding": "zlib", "level": None, "window_log": None}) == (
        StreamSettings("zlib")
    )
    with pytest.raises(PayloadError):
        CommandRequest.from_wire({"name": None})
    with pytest.raises(PayloadError):
        ClientSettings.from_wire({"context": None})
