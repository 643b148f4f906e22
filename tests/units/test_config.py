"""Server configuration: defaults < TOML file < environment (token) < flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.cli import build_parser, main
from server.config import (
    _SCALARS,
    FILE_ONLY,
    ConfigError,
    ServeConfig,
    build_config,
    flag_of,
    load_file,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zplex.toml"
    path.write_text(text)
    return path


def test_file_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZPLEX_WRITE_TOKEN", raising=False)
    path = write(
        tmp_path,
        'port = 9000\nworkers = 3\nstore = "s"\nencodings = ["zlib", "identity"]\n'
        "[limits]\nmax_streams = 8\nidle_timeout_s = 5.5\n",
    )
    config = build_config(load_file(path), {"port": 9001, "limit_max_inflight": 100})
    assert config.port == 9001  # the flag wins
    assert config.workers == 3 and config.store == "s"
    assert config.encodings == ("zlib", "identity")
    assert config.limits.max_streams == 8
    assert config.limits.idle_timeout_s == 5.5
    assert config.limits.max_inflight == 100


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZPLEX_WRITE_TOKEN", "from-env")
    assert build_config({}, {}).write_token == "from-env"
    assert build_config({}, {"write_token": "flag"}).write_token == "flag"


@pytest.mark.parametrize(
    "text",
    [
        "prot = 1\n",  # a typo
        'port = "7410"\n',
        "port = 70000\n",
        "workers = 0\n",
        "[limits]\nmax_streams = -1\n",
        "[limits]\nmax_stream = 3\n",
        'encodings = ["brotli"]\n',
        "max_generate_bytes = -1\n",
        "this is not toml",
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        build_config(load_file(write(tmp_path, text)), {})


def test_defaults() -> None:
    config = ServeConfig()
    assert config.host == "127.0.0.1" and config.port == 7410 and config.workers >= 1
    assert config.write_token is None
    assert config.max_generate_bytes == 256 << 20


def test_the_generate_cap_from_the_file_or_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "max_generate_bytes = 1000\n")
    assert build_config(load_file(path), {}).max_generate_bytes == 1000
    args = build_parser().parse_args(["serve", "--max-generate-bytes", "5000"])
    assert args.max_generate_bytes == 5000
    assert build_config(load_file(path), {"max_generate_bytes": 5000}).max_generate_bytes == 5000


def test_serve_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["serve", "--limit", "max_streams"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["serve", "--limit", "max_streams=lots"]) == 2
    assert "not a number" in capsys.readouterr().err


def test_serve_reports_an_unusable_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["serve", "--store", str(blocker / "store")]) == 2
    assert "cannot use store" in capsys.readouterr().err


def test_metrics_and_log_format_options(tmp_path: Path) -> None:
    text = 'metrics_port = 9100\nmetrics_host = "0.0.0.0"\nlog_format = "json"\n'
    config = build_config(load_file(write(tmp_path, text)), {})
    assert (config.metrics_port, config.metrics_host, config.log_format) == (
        9100,
        "0.0.0.0",
        "json",
    )
    assert ServeConfig().metrics_port is None and ServeConfig().log_format == "text"
    with pytest.raises(ConfigError, match="log_format"):
        ServeConfig(log_format="yaml")
    with pytest.raises(ConfigError, match="metrics_port"):
        ServeConfig(metrics_port=70000)
    with pytest.raises(ConfigError, match="stdio"):
        ServeConfig(metrics_port=0, stdio=True)


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (
            "max_output_buffer_bytes=1000",
            "--limit max_output_buffer_bytes: not a protocol limit but a server setting: set "
            "max_output_buffer_bytes = ... at the top level of the --config file\n",
        ),
        (
            "worker_silence_s=5",
            "--limit worker_silence_s: not a protocol limit but a server setting: set "
            "worker_silence_s = ... at the top level of the --config file, or pass "
            "--worker-silence\n",
        ),
        ("max_stream=3", "--limit max_stream: unknown limit (the limits: max_frame_size, "),
    ],
)
def test_a_setting_given_as_a_limit_says_where_it_is_set(
    limit: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--limit", limit]) == 2
    assert f"zplex serve: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[limits]\nmax_front_output_bytes = 1000\n",
            "config [limits] max_front_output_bytes: not a protocol limit but a server setting: "
            "set max_front_output_bytes = ... at the top level of the --config file",
        ),
        (
            "max_streams = 8\n",
            "config option 'max_streams' is a protocol limit: put it in the [limits] table, or "
            "pass --limit max_streams=...",
        ),
    ],
)
def test_a_key_in_the_wrong_part_of_the_config_file_says_where_it_goes(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(write(tmp_path, text))
    assert str(info.value) == message


def test_the_flags_named_for_settings_exist() -> None:
    """Every config-file setting is either file-only or set by the flag the hints name."""
    serve = next(
        action.choices["serve"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    flags = {option for action in serve._actions for option in action.option_strings}
    for key in _SCALARS:
        flag = flag_of(key)
        assert flag is None or flag in flags, key
    assert set(_SCALARS) >= FILE_ONLY
