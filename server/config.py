"""Server configuration: defaults, a TOML file (``--config``), then command-line flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from server.protocol.encoding import DEFAULT_LEVEL, SMALL_TABLES_FROM_CONTEXTS
from server.protocol.limits import Limits
from server.protocol.payloads import ENCODINGS

DEFAULT_PORT = 7410
#: One front process per this many CPUs by default: a front spends about a third of a
#: worker's CPU per byte (``front_overhead`` in the bench), so one front keeps about three
#: to four workers busy (README, "Fronts").
CPUS_PER_FRONT = 4


def default_fronts() -> int:
    return max(1, (os.cpu_count() or 1) // CPUS_PER_FRONT)


LOG_FORMATS = ("text", "json")
TOKEN_ENV = "ZPLEX_WRITE_TOKEN"
#: The default cap on a ``generate`` response (256 MiB: level 19 on it is minutes of CPU).
DEFAULT_MAX_GENERATE_BYTES = 256 << 20


class ConfigError(ValueError):
    """A configuration file or option is wrong; the message says which."""


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = dataclasses.field(default_factory=lambda: max(1, os.cpu_count() or 1))
    #: Front processes accepting on the shared port (SO_REUSEPORT).
    fronts: int = dataclasses.field(default_factory=default_fronts)
    store: str = "zplex-store"
    write_token: str | None = None
    #: Offer the ``delete`` extension (docs/protocol-decisions.md, "Extensions"); off, the
    #: server has exactly the commands of docs/protocol.md section 4.
    allow_delete: bool = False
    ready_file: str | None = None
    #: Serve one connection on stdin/stdout instead of TCP.
    stdio: bool = False
    #: Port of the HTTP API (docs/protocol.md section 7) on ``host``; None: no HTTP.
    http_port: int | None = None
    #: Answer ``.../debugreflect`` over HTTP (off by default).
    http_debugreflect: bool = False
    #: ZeroMQ endpoint (``tcp://HOST:PORT``) where remote workers join; None: local only.
    worker_listen: str | None = None
    #: Directory of CURVE keys for remote workers (``zplex keys DIR``).
    worker_keys: str | None = None
    log_level: str = "WARNING"
    #: ``text`` (default) or ``json`` (one JSON object a line: server.logs).
    log_format: str = "text"
    #: Port of the Prometheus ``/metrics`` endpoint (0: any free port); None: no metrics.
    metrics_port: int | None = None
    #: Address of the metrics endpoint; None: ``host``.
    metrics_host: str | None = None
    #: Level used when a client states no wish (clamped to ``limits.max_level``).
    level: int = DEFAULT_LEVEL
    encodings: tuple[str, ...] = ENCODINGS
    #: Largest ``generate`` response, bytes. Its bytes are made, compressed and sent a chunk
    #: at a time, so the cap bounds the CPU one request may take, not memory.
    max_generate_bytes: int = DEFAULT_MAX_GENERATE_BYTES
    #: A stream that makes a new zstd context while its worker holds this many contexts or
    #: more gets small match tables (0: every ``stream`` and ``request`` zstd context): less
    #: worker CPU for a little ratio (docs/performance.md, "Small zstd match tables").
    small_tables_from: int = SMALL_TABLES_FROM_CONTEXTS
    #: A local worker silent this long (it heartbeats every second when idle) is declared
    #: lost, its requests get worker-lost, and it is killed and replaced.
    worker_silence_s: float = 10.0
    #: Seconds to finish the requests in flight after a goaway before closing anyway.
    drain_timeout_s: float = 10.0
    #: Response bytes the front holds for a client that does not read them; past this the
    #: connection is dropped (a client must not make the server buffer without bound).
    max_output_buffer_bytes: int = 128 << 20
    #: Response bytes a front holds for all its clients together: past this, no stream gets
    #: credit (workers stop sending) until the clients have taken a quarter of it.
    max_front_output_bytes: int = 1 << 30
    limits: Limits = dataclasses.field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if self.workers < 0:
            raise ConfigError(
                f"workers must be at least 0 (0: remote workers only), got {self.workers}"
            )
        if self.workers == 0 and self.worker_listen is None:
            raise ConfigError(
                "workers 0 (--workers 0) runs remote workers only and needs --worker-listen "
                "tcp://HOST:PORT (worker_listen) and --worker-keys DIR"
            )
        if self.worker_silence_s < 2:
            raise ConfigError(
                f"worker_silence_s must be at least 2 (workers heartbeat every second), "
                f"got {self.worker_silence_s}"
            )
        if not 1 <= self.fronts <= 256:
            raise ConfigError(f"fronts must be in [1, 256], got {self.fronts}")
        if self.worker_listen is not None:
            if not self.worker_listen.startswith("tcp://"):
                raise ConfigError("worker_listen must be a tcp:// endpoint")
            if self.fronts > 1 and self.worker_listen.endswith(":0"):
                raise ConfigError(
                    "worker_listen needs a fixed port with more than one front "
                    "(front k listens on that port + k)"
                )
            if self.worker_keys is None:
                raise ConfigError("worker_listen needs worker_keys (make them: zplex keys DIR)")
        if self.max_generate_bytes < 0:
            raise ConfigError(f"max_generate_bytes must be >= 0, got {self.max_generate_bytes}")
        if self.small_tables_from < 0:
            raise ConfigError(
                f"--small-tables-from (small_tables_from) must be >= 0 (0: small match tables "
                f"for every stream and request zstd context), got {self.small_tables_from}"
            )
        unknown = [e for e in self.encodings if e not in ENCODINGS]
        if unknown or not self.encodings:
            raise ConfigError(f"encodings must be a non-empty subset of {list(ENCODINGS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {list(LOG_FORMATS)}")
        if self.metrics_port is not None:
            if not 0 <= self.metrics_port <= 65535:
                raise ConfigError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
            if self.stdio:
                raise ConfigError("metrics_port cannot be used with stdio")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"unknown log level {self.log_level!r}")


_SCALARS: dict[str, type | tuple[type, ...]] = {
    "host": str,
    "port": int,
    "workers": int,
    "fronts": int,
    "store": str,
    "write_token": str,
    "allow_delete": bool,
    "ready_file": str,
    "http_port": int,
    "http_debugreflect": bool,
    "worker_listen": str,
    "worker_keys": str,
    "log_level": str,
    "log_format": str,
    "metrics_port": int,
    "metrics_host": str,
    "level": int,
    "max_generate_bytes": int,
    "small_tables_from": int,
    "drain_timeout_s": (int, float),
    "worker_silence_s": (int, float),
    "max_output_buffer_bytes": int,
    "max_front_output_bytes": int,
}


#: The flags of ``zplex serve`` that set a config-file key, where the flag is not simply
#: ``--`` and the key with dashes; keys in :data:`FILE_ONLY` have no flag.
_FLAG_OF = {"worker_silence_s": "--worker-silence"}
FILE_ONLY = frozenset({"drain_timeout_s", "max_output_buffer_bytes", "max_front_output_bytes"})
LIMIT_NAMES = tuple(f.name for f in dataclasses.fields(Limits))


def flag_of(key: str) -> str | None:
    """The ``zplex serve`` flag that sets the config-file key ``key`` (None: the file only)."""
    return None if key in FILE_ONLY else _FLAG_OF.get(key, "--" + key.replace("_", "-"))


def _where_setting_goes(key: str) -> str:
    """Where a server setting (not a protocol limit) is set: the config file's top level, or
    its flag."""
    flag = flag_of(key)
    return f"set {key} = ... at the top level of the --config file" + (
        f", or pass {flag}" if flag else ""
    )


def parse_limit_option(item: str) -> tuple[str, int | float]:
    """``--limit NAME=VALUE`` -> (name, value); :class:`ConfigError` naming what is wrong, and
    where a server setting that is not a limit is set instead."""
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep:
        raise ConfigError(f"--limit takes NAME=VALUE, got {item!r}")
    if name not in LIMIT_NAMES:
        if name in _SCALARS:
            raise ConfigError(
                f"--limit {name}: not a protocol limit but a server setting: "
                f"{_where_setting_goes(name)}"
            )
        raise ConfigError(f"--limit {name}: unknown limit (the limits: {', '.join(LIMIT_NAMES)})")
    try:
        return name, float(value) if "." in value else int(value)
    except ValueError:
        raise ConfigError(f"--limit {name}: {value!r} is not a number") from None


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config: the scalar options above at top level, ``encodings`` as a list and
    a ``[limits]`` table with the keys of docs/protocol.md section 6."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "limits":
            if not isinstance(value, dict):
                raise ConfigError("[limits] must be a table")
            for name in value:
                if name in _SCALARS:
                    raise ConfigError(
                        f"config [limits] {name}: not a protocol limit but a server setting: "
                        f"{_where_setting_goes(name)}"
                    )
            out["limits"] = value
        elif key == "encodings":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError("encodings must be a list of names")
            out["encodings"] = tuple(value)
        elif key in _SCALARS:
            kind = _SCALARS[key]
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
                raise ConfigError(f"config option {key!r} has the wrong type")
            out[key] = value
        elif key in LIMIT_NAMES:
            raise ConfigError(
                f"config option {key!r} is a protocol limit: put it in the [limits] table, or "
                f"pass --limit {key}=..."
            )
        else:
            raise ConfigError(f"unknown config option {key!r}")
    return out


def build_config(file_values: dict[str, Any], overrides: dict[str, Any]) -> ServeConfig:
    """Merge: defaults < config file < environment (token) < command-line flags (``None``
    in ``overrides`` means the flag was not given)."""
    values = dict(file_values)
    limits = dict(values.pop("limits", {}))
    if os.environ.get(TOKEN_ENV):
        values["write_token"] = os.environ[TOKEN_ENV]
    for key, value in overrides.items():
        if value is None:
            continue
        if key.startswith("limit_"):
            limits[key.removeprefix("limit_")] = value
        else:
            values[key] = value
    try:
        return ServeConfig(**values, limits=Limits.from_mapping(limits))
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
