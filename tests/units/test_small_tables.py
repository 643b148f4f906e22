"""The operator's small-match-tables trade (``--small-tables-from``), without processes: the
server option (flag, config key, bad values) and how it reaches local and remote workers
(their config, the front's WELCOME), the bench's option, the tables of its in-process
reference, and the warning when the workers' tables and the reference's differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from workerharness import Harness, make_core

from bench import cpu, phase_checks, stats
from bench.config import BenchConfig, BenchError
from server.cli import ServerLayout, build_parser, main
from server.config import ConfigError, ServeConfig, build_config, load_file
from server.fleet import Fleet
from server.ipc.envelope import Envelope, Kind
from server.ipc.messages import Ready, Welcome, WorkerStats
from server.protocol.encoding import SMALL_TABLES_FROM_CONTEXTS, Encoder
from server.protocol.limits import Limits
from server.protocol.payloads import StreamSettings, pack
from workers.worker import WorkerConfig

# --- the server's option ---------------------------------------------------------------------


def test_the_option_from_its_default_the_file_and_the_flag(tmp_path: Path) -> None:
    assert ServeConfig().small_tables_from == SMALL_TABLES_FROM_CONTEXTS == 16
    path = tmp_path / "zplex.toml"
    path.write_text("small_tables_from = 4\n")
    assert build_config(load_file(path), {}).small_tables_from == 4
    args = build_parser().parse_args(["serve", "--small-tables-from", "0"])
    assert args.small_tables_from == 0
    # The flag wins over the file, 0 included (0 is a value, not "not given").
    overrides = {"small_tables_from": args.small_tables_from}
    assert build_config(load_file(path), overrides).small_tables_from == 0


@pytest.mark.parametrize(
    "text",
    ["small_tables_from = -1\n", "small_tables_from = true\n", 'small_tables_from = "0"\n'],
)
def test_a_bad_value_in_the_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "zplex.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="small_tables_from"):
        build_config(load_file(path), {})


def test_a_bad_flag_is_an_argument_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--small-tables-from", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--small-tables-from" in err and ">= 0" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--small-tables-from", "some"])
    assert exit_info.value.code == 2
    assert "--small-tables-from" in capsys.readouterr().err


def test_help_states_the_trade(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "-18% worker CPU for about -2.4% ratio on source code" in text


def test_local_workers_have_it_in_their_config() -> None:
    layout = ServerLayout(ServeConfig(workers=1, small_tables_from=0))
    config = WorkerConfig(**layout.workers(("ipc:///tmp/front-0",)).config_for(0))
    assert config.small_tables_from == 0


# --- remote workers: the front's WELCOME -----------------------------------------------------


def test_the_welcome_carries_it_and_an_older_welcome_means_the_default() -> None:
    welcome = Welcome(2, "zplex/t", Limits(), (), 0)
    assert Welcome.decode(welcome.encode()) == welcome
    older = Welcome.decode(pack([2, "zplex/t", {}, ["tcp://b:1"]]))
    assert older.small_tables_from == SMALL_TABLES_FROM_CONTEXTS
    with pytest.raises(ValueError, match="small_tables_from"):
        Welcome.decode(pack([2, "zplex/t", {}, [], -1]))


class RemoteLink:
    """The front's link to remote workers: what it sends, recorded."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send(self, identity: bytes, message: list[bytes]) -> None:
        self.sent.append(message)

    def flush(self) -> None:
        pass


class NoEvents:
    def worker_ready(self, index: int) -> None:
        pass


def test_the_front_welcomes_a_remote_worker_with_its_option() -> None:
    fleet = Fleet(0, "zplex/t", Limits(), NoEvents(), lambda: 0.0, small_tables_from=0)  # type: ignore[arg-type]
    fleet.remote = link = RemoteLink()  # type: ignore[assignment]
    fleet.from_remote(b"r-a", [Envelope(Kind.READY).pack(), Ready(21, -1, "host-a").encode()])
    (message,) = link.sent
    assert Envelope.unpack(message[0]).kind is Kind.WELCOME
    assert Welcome.decode(message[1]).small_tables_from == 0


def test_a_remote_worker_welcomed_with_0_gives_its_first_context_small_tables(
    tmp_path: Path,
) -> None:
    w = Harness(make_core(tmp_path, index=-1, endpoints=("tcp://a:1",), remote=True))
    w.core.start()
    w.collect()
    w.send(0, Envelope(Kind.WELCOME), Welcome(3, "zplex/front", Limits(), (), 0).encode())
    w.open(3)
    w.request(3, 1, "echo", data=b"the first context of this worker\n" * 100)
    assert w.core.table.streams[(0, 1, 3)].writer.small_tables
    reply = w.send(0, Envelope(Kind.STATS, conn=1))[0].parts[0]
    assert WorkerStats.decode(reply).small_table_contexts == 1


# --- the bench -------------------------------------------------------------------------------


def test_the_bench_option_and_its_metadata() -> None:
    assert BenchConfig().describe()["small_tables_from"] == SMALL_TABLES_FROM_CONTEXTS
    assert BenchConfig(small_tables_from=0).describe()["small_tables_from"] == 0
    # A --connect server's option is its own: not known to the bench.
    assert BenchConfig(connect=("127.0.0.1", 1)).describe()["small_tables_from"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"small_tables_from": -1}, "--small-tables-from must be >= 0"),
        (
            {"small_tables_from": 0, "connect": ("127.0.0.1", 1)},
            "--small-tables-from sets an option of the server bench starts itself",
        ),
    ],
)
def test_bad_bench_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        BenchConfig(**kwargs)


@pytest.mark.parametrize(
    ("small_tables_from", "context", "encoding", "small"),
    [
        (0, "stream", "zstd-8mb", True),
        (0, "request", "zstd-8mb", True),
        (0, "frame", "zstd-8mb", False),  # a worker's frame contexts never have them
        (0, "stream", "zlib", False),
        (0, "stream", "identity", False),
        (16, "stream", "zstd-8mb", False),  # a worker's first contexts have default tables
        (1, "stream", "zstd-8mb", False),
        (None, "stream", "zstd-8mb", False),  # --connect: the server's own
    ],
)
def test_the_reference_uses_small_tables_only_when_every_context_has_them(
    small_tables_from: int | None, context: str, encoding: str, small: bool
) -> None:
    assert stats.reference_small_tables(small_tables_from, context, encoding) is small


@pytest.mark.parametrize("small", [False, True])
def test_the_reference_compresses_as_a_worker_context_with_the_same_tables(small: bool) -> None:
    """The same bytes out as the server's encoder: the same match tables, not just a similar
    ratio (small and default tables give different bytes on this text)."""
    bodies = [b"".join(b"%d: line %d of body %d\n" % (i * j, i, j) for i in range(2000))
              for j in range(3)]  # fmt: skip
    encoder = Encoder(StreamSettings("zstd-8mb", 3, 23, "stream"), 1 << 20, small_tables=small)
    wire = sum(len(p) for body in bodies for p in [*encoder.feed(body), *encoder.end_response()])
    _raw, reference = stats._compress_all(bodies, 3, 23, "stream", "zstd-8mb", 32768, small)
    assert reference == wire
    _raw, other = stats._compress_all(bodies, 3, 23, "stream", "zstd-8mb", 32768, not small)
    assert other != wire


def test_the_small_tables_made_during_a_phase_from_two_snapshots() -> None:
    probe = cpu.CpuProbe(local=False)
    header: dict[str, Any] = {"workers": [{"pid": 10, "small_table_contexts": 2}]}
    before = probe.snapshot(header)
    header["workers"][0]["small_table_contexts"] = 5
    assert cpu.small_tables_delta(before, probe.snapshot(header)) == 3
    restarted = probe.snapshot({"workers": [{"pid": 11, "small_table_contexts": 0}]})
    assert cpu.small_tables_delta(before, restarted) is None
    older = probe.snapshot({"workers": [{"pid": 10}]})  # a server that does not report them
    assert cpu.small_tables_delta(older, older) is None


def test_the_warning_when_workers_and_reference_had_unlike_tables() -> None:
    assert phase_checks.unlike_tables("w / stream", 0, False) is None
    assert phase_checks.unlike_tables("w / stream", 8, True) is None
    assert phase_checks.unlike_tables("w / stream", None, True) is None  # unknown
    small_workers = phase_checks.unlike_tables("w / stream", 8, False)
    assert small_workers is not None and small_workers.startswith("w / stream: ")
    assert "8 of the phase's zstd contexts small match tables" in small_workers
    assert "compare unlike compressions" in small_workers
    small_reference = phase_checks.unlike_tables("w / stream", 0, True)
    assert small_reference is not None and "none of the phase's contexts" in small_reference
    assert "compare unlike compressions" in small_reference
