"""Tests of the bench's configuration (bench/config.py): the value parsers, the checks of
:class:`BenchConfig`, and the arguments of ``zplex bench`` turned into a config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from bench import cli, config
from bench.config import BenchConfig, BenchError


def test_parsers() -> None:
    assert config.parse_bytes("512K") == 512 * 1024
    assert config.parse_bytes("16MiB") == 16 << 20
    assert config.parse_bytes("1.5G") == 3 << 29
    assert config.parse_bytes("100") == 100
    assert config.parse_sizes("1,2, 4") == [1, 2, 4]
    assert config.parse_endpoint("[::1]:7410") == ("::1", 7410)
    assert config.workload_names(["stdlib,versioned", "git:/a,b"]) == (
        "stdlib",
        "versioned",
        "git:/a,b",
    )
    for bad in ("12Q", "-1K", "K"):
        with pytest.raises(BenchError):
            config.parse_bytes(bad)
    with pytest.raises(BenchError):
        config.parse_sizes("1,x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policies": ("stream", "nope")},
        {"policies": ()},
        {"streams": 129},
        {"connections": 0},
        {"requests": 5, "duration_s": 2.0},
        {"rate": 0.0},
        {"level": 30},
        {"encoding": "zlib", "level": 12},
        {"connect": ("127.0.0.1", 1), "workers": 2},
        {"max_error_rate": 1.5},
    ],
)
def test_bad_configs(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BenchError):
        BenchConfig(**kwargs)


def parse(argv: list[str]) -> argparse.Namespace:
    """``zplex bench ARGV`` as the command line parses it."""
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_config_from_default_arguments() -> None:
    settings = config.config_from_args(parse([]))
    assert settings == BenchConfig()
    assert settings.workloads == config.DEFAULT_WORKLOADS
    assert settings.effective_duration_s == config.DEFAULT_DURATION_S
    assert settings.describe()["model"] == "closed"


def test_config_from_arguments(tmp_path: Path) -> None:
    argv = ["-w", "stdlib,generate:json", "--git", "/repo", "--dir", "/data"]
    argv += ["--policies", "stream,request", "--encoding", "zlib", "--level", "6"]
    argv += ["-c", "3", "-s", "2", "-n", "50", "--rate", "100", "--window", "2"]
    argv += ["--connect", "[::1]:7410", "--token", "t", "--limit", "4M", "--generate-size", "1K"]
    argv += ["--max-error-rate", "0.5", "--timeout", "9", "--json", str(tmp_path / "o.json")]
    argv += ["--cleanup"]
    settings = config.config_from_args(parse(argv))
    assert settings.workloads == ("stdlib", "generate:json", "git:/repo", "dir:/data")
    assert settings.policies == ("stream", "request")
    assert (settings.encoding, settings.level) == ("zlib", 6)
    assert (settings.connections, settings.streams, settings.window) == (3, 2, 2)
    assert (settings.requests, settings.duration_s, settings.rate) == (50, None, 100.0)
    assert settings.connect == ("::1", 7410) and settings.token == "t"
    assert settings.limit_bytes == 4 << 20 and settings.generate_size == 1024
    assert settings.max_error_rate == 0.5 and settings.timeout_s == 9.0
    assert settings.json_path == tmp_path / "o.json"
    assert settings.describe()["connect"] == "::1:7410"
    assert settings.cleanup and settings.describe()["cleanup"] is True
    assert settings.describe()["model"] == "open"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sweep-workers", "1,x"], "comma-separated integers"),
        (["--connect", "nowhere"], "--connect"),
        (["--json", "/no/such/dir/o.json"], "no such directory"),
        (["--workers", "2", "--connect", "127.0.0.1:1"], "--workers and --sweep-workers"),
        (["--fronts", "2", "--connect", "127.0.0.1:1"], "--fronts"),
        (["--sweep-fronts", "1,2", "--connect", "127.0.0.1:1"], "--sweep-fronts"),
        (["--fronts", "0"], "--fronts must be at least 1"),
        (["--clients", "0"], "--clients must be at least 1"),
        (["--cleanup"], "--cleanup goes with --connect HOST:PORT"),
    ],
)
def test_bad_arguments_are_bench_errors(argv: list[str], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        config.config_from_args(parse(argv))


def test_client_processes_are_at_most_one_per_connection() -> None:
    assert config.BenchConfig(clients=3, connections=2).client_processes == 2
    assert config.BenchConfig(clients=2, connections=4).client_processes == 2
    assert config.BenchConfig().client_processes == min(2, config.default_clients())
    assert config.default_clients() == max(1, config.default_workers() // 4)


def test_describe_error() -> None:
    assert config.describe_error(ConnectionRefusedError(111, "Connection refused")) == (
        "Connection refused"
    )
    assert config.describe_error(TimeoutError()) == "TimeoutError"
    assert config.describe_error(ValueError("bad")) == "bad"
