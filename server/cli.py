"""``zplex``: the command line, and the one place that knows every part of the project.

Each part registers its own subcommands (``register(subparsers)``), setting ``func`` to a
callable that takes the parsed arguments and returns an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import ServeConfig
    from server.stopping import Stopping
    from workers.supervisor import Supervisor

#: Modules that contribute subcommands, in the order they appear in ``--help``.
SUBCOMMAND_MODULES = ("server.dissect", "bench.cli_client", "bench.cli")


def _register_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the server (front processes and worker pool)",
        description="Run the zplex server: front processes speaking the frame protocol over "
        "TCP (one port, shared) and a pool of worker processes that serve every front, each "
        "keeping a compression context per stream.",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 7410; 0 picks a free port)")
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: CPU count; 0: remote workers only, with --worker-listen)",
    )
    p.add_argument(
        "--fronts",
        type=int,
        help="front processes sharing the port (SO_REUSEPORT) and the workers "
        "(default: one per 4 CPUs, at least 1)",
    )
    p.add_argument(
        "--store", help="object store directory (created if missing; default ./zplex-store)"
    )
    p.add_argument(
        "--config",
        help="TOML file with any option and a [limits] table; flags win (default: none)",
    )
    p.add_argument(
        "--write-token",
        help="token that grants write permission (put, delete); or set ZPLEX_WRITE_TOKEN "
        "(default: none, writes are refused)",
    )
    p.add_argument(
        "--allow-delete",
        action="store_true",
        default=None,
        help="offer the delete command (a zplex extension, write permission; zplex bench "
        "--cleanup uses it); without it the server has exactly the protocol's commands",
    )
    p.add_argument(
        "--ready-file",
        help="write JSON {tcp, pid, fronts, workers, ...} here once every front serves "
        "(atomically; kept current) (default: none)",
    )
    p.add_argument(
        "--stdio",
        action="store_true",
        default=None,
        help="serve one connection on stdin/stdout (e.g. behind ssh) instead of TCP",
    )
    p.add_argument(
        "--http-port",
        type=int,
        help="also serve the HTTP API (docs/protocol.md, section 7 Transports) on this port "
        "(0: any free port) (default: no HTTP)",
    )
    p.add_argument(
        "--http-debugreflect",
        action="store_true",
        default=None,
        help="enable POST /api/zplex-v1/<ro|rw>/debugreflect",
    )
    p.add_argument(
        "--worker-listen",
        metavar="tcp://HOST:PORT",
        help="also accept remote workers (zplex worker) here; port 0 picks a free one "
        "(default: local workers only)",
    )
    p.add_argument(
        "--worker-keys",
        metavar="DIR",
        help="CURVE keys for remote workers (zplex keys DIR; default: none, needed with "
        "--worker-listen)",
    )
    p.add_argument(
        "--worker-silence",
        type=float,
        metavar="SECONDS",
        help="a local worker silent this long is declared lost, killed and replaced "
        "(default 10; workers heartbeat every second when idle)",
    )
    p.add_argument(
        "--level", type=int, help="compression level when a client states none (default 3)"
    )
    p.add_argument(
        "--max-generate-bytes",
        type=int,
        metavar="N",
        help="largest generate response in bytes (default 268435456, 256 MiB; made and sent "
        "a chunk at a time, so it bounds CPU, not memory)",
    )
    p.add_argument(
        "--small-tables-from",
        type=int,
        metavar="N",
        help="small zstd match tables for a context made while its worker holds N or more "
        "(default 16; 0: every stream and request zstd context, -18%% worker CPU for about "
        "-2.4%% ratio on source code)",
    )
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a limit (docs/protocol.md, section 6 Limits), e.g. --limit max_streams=16; "
        "repeatable (default: the limits' defaults, or the config file's [limits])",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port) "
        "(default: no metrics)",
    )
    p.add_argument("--metrics-host", help="address of the metrics endpoint (default: --host)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default), ERROR")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text (default) or json: one JSON object a line",
    )
    p.set_defaults(func=_serve)


def _register_remote(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a remote worker that joins a front over TCP",
        description="Join a front started with --worker-listen and --worker-keys, and serve "
        "the streams it routes here until it shuts down. The store should hold the same "
        "objects as the front's local workers' (a shared or replicated directory).",
    )
    p.add_argument(
        "--connect",
        required=True,
        metavar="tcp://HOST:PORT",
        help="the front's --worker-listen endpoint (required)",
    )
    p.add_argument(
        "--keys", required=True, metavar="DIR", help="holds front.key, worker.key* (required)"
    )
    p.add_argument("--store", required=True, help="object store directory (required)")
    p.add_argument(
        "--max-generate-bytes",
        type=int,
        metavar="N",
        help="largest generate response in bytes (default 268435456, 256 MiB)",
    )
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: one JSON object a line",
    )
    p.set_defaults(func=_worker)

    p = subparsers.add_parser(
        "keys",
        help="make the CURVE keys of a front and its remote workers",
        description="Write front.key, front.key_secret, worker.key and worker.key_secret in "
        "DIR. The front uses DIR as --worker-keys (it accepts every *.key public key found "
        "there); a remote worker needs front.key and worker.key_secret.",
    )
    p.add_argument("dir", help="directory to write the keys in (created if missing)")
    p.add_argument(
        "--force", action="store_true", help="overwrite keys already in DIR (default: refuse)"
    )
    p.set_defaults(func=_keys)


def _worker(args: argparse.Namespace) -> int:
    from pathlib import Path

    from server.ipc.remote import FRONT_KEY, WORKER_KEY_SECRET
    from workers.worker import run_remote

    missing = [n for n in (FRONT_KEY, WORKER_KEY_SECRET) if not (Path(args.keys) / n).is_file()]
    if missing:
        print(f"zplex worker: {args.keys} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    if not args.connect.startswith("tcp://"):
        print("zplex worker: --connect takes tcp://HOST:PORT", file=sys.stderr)
        return 2
    from server.config import DEFAULT_MAX_GENERATE_BYTES

    cap = DEFAULT_MAX_GENERATE_BYTES if args.max_generate_bytes is None else args.max_generate_bytes
    if cap < 0:
        print("zplex worker: --max-generate-bytes must be >= 0", file=sys.stderr)
        return 2
    return run_remote(
        args.connect, args.keys, args.store, args.log_level.upper(), args.log_format, cap
    )


def _keys(args: argparse.Namespace) -> int:
    import zmq.auth

    names = ("front.key", "front.key_secret", "worker.key", "worker.key_secret")
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        print(f"zplex keys: {args.dir} is not a directory", file=sys.stderr)
        return 2
    existing = [n for n in names if os.path.exists(os.path.join(args.dir, n))]
    if existing and not args.force:
        print(
            f"zplex keys: {args.dir} already holds {', '.join(existing)}; pass --force to "
            "replace them (every front and worker using them then needs the new ones)",
            file=sys.stderr,
        )
        return 2
    try:
        os.makedirs(args.dir, exist_ok=True)
        old_umask = os.umask(0o077)  # the secret keys are written 0600 from the start
        try:
            for name in ("front", "worker"):
                zmq.auth.create_certificates(args.dir, name)
        finally:
            os.umask(old_umask)
        for name in ("front", "worker"):
            os.chmod(os.path.join(args.dir, f"{name}.key_secret"), 0o600)
            os.chmod(os.path.join(args.dir, f"{name}.key"), 0o644)
    except OSError as exc:
        print(f"zplex keys: cannot write {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"keys written to {args.dir}: front.key[_secret], worker.key[_secret] (secrets 0600)")
    return 0


def _check_ready_file(path: str | None) -> None:
    """The ready file's directory must exist and be writable, before anything starts: a tool
    waiting for the file would otherwise wait for ever."""
    import os

    from server.config import ConfigError

    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ConfigError(f"--ready-file {path}: {directory} is not a writable directory")


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from server.cluster import serve
    from server.config import ConfigError, build_config, load_file, parse_limit_option
    from server.logs import setup_logging
    from workers.store import ObjectStore

    try:
        file_values = load_file(args.config) if args.config else {}
        overrides = {
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "fronts": args.fronts,
            "store": args.store,
            "write_token": args.write_token,
            "allow_delete": args.allow_delete,
            "ready_file": args.ready_file,
            "level": args.level,
            "max_generate_bytes": args.max_generate_bytes,
            "small_tables_from": args.small_tables_from,
            "stdio": args.stdio,
            "http_port": args.http_port,
            "http_debugreflect": args.http_debugreflect,
            "worker_listen": args.worker_listen,
            "worker_keys": args.worker_keys,
            "worker_silence_s": args.worker_silence,
            "log_level": args.log_level.upper() if args.log_level else None,
            "log_format": args.log_format,
            "metrics_port": args.metrics_port,
            "metrics_host": args.metrics_host,
        }
        for item in args.limit:
            name, value = parse_limit_option(item)
            overrides["limit_" + name] = value
        config = build_config(file_values, overrides)
        _check_ready_file(config.ready_file)
    except ConfigError as exc:
        print(f"zplex serve: {exc}", file=sys.stderr)
        return 2
    try:
        ObjectStore(config.store)  # created if missing; fails here, not in every worker
    except OSError as exc:
        print(f"zplex serve: cannot use store {config.store}: {exc.strerror}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format, "supervisor")
    import zmq

    try:
        return asyncio.run(serve(config, ServerLayout(config)))
    except socket.gaierror as exc:  # --host names no address
        print(f"zplex serve: --host {config.host!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"zplex serve: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (zmq.ZMQError, ValueError) as exc:  # the worker endpoint or keys
        print(f"zplex serve: {exc}", file=sys.stderr)
        return 1


class ServerLayout:
    """The server's processes, as the supervisor (``server.cluster``) builds them: the
    worker pool, the front pool, and the one front of ``--stdio`` run in-process."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config

    def workers(self, endpoints: tuple[str, ...]) -> Supervisor:
        from workers.supervisor import Supervisor
        from workers.worker import STOP_SIGNAL, WorkerConfig
        from workers.worker import main as worker_main

        config = self.config

        def config_for(index: int) -> dict[str, object]:
            return WorkerConfig(
                index=index,
                endpoint="",
                endpoints=endpoints,
                store=config.store,
                server=f"zplex/{_version()}",
                limits=config.limits,
                max_generate_bytes=config.max_generate_bytes,
                small_tables_from=config.small_tables_from,
                allow_delete=config.allow_delete,
                log_level=config.log_level,
                log_format=config.log_format,
                # This front takes no HEARTBEAT from its local workers (its own children).
            ).to_dict()

        return Supervisor(config.workers, worker_main, config_for, stop_signal=STOP_SIGNAL)

    def fronts(self, front_config: Callable[[int], dict[str, Any]]) -> Supervisor:
        from server.front_process import front_main
        from workers.supervisor import Supervisor

        return Supervisor(self.config.fronts, front_main, front_config, role="front")

    async def run_front_here(
        self, spec: dict[str, Any], report: Callable[..., None], stopping: Stopping
    ) -> int:
        from server.front_process import run_front

        return await run_front(spec, report, stopping)


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default unless its text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
            or action.nargs == 0  # a flag: its help says what setting it does
        ):
            return text
        return f"{text} (default: %(default)s)"


class ZplexParser(argparse.ArgumentParser):
    """An argument parser whose help shows defaults (its subcommands' parsers too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = ZplexParser(
        prog="zplex",
        description="Multiprocess compression-offloading stream server and load generator.",
    )
    parser.add_argument("--version", action="version", version=f"zplex {_version()}")
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=ZplexParser
    )
    _register_serve(subparsers)
    _register_remote(subparsers)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zplex")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a typo in a subcommand's flag: that subcommand's usage, not zplex's
        _subparser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `zplex stats --json | head`: the reader left, end quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


def _subparser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The innermost subcommand's parser that ``args`` chose (``bench compare``, ``frames
    decode``: not their parent's)."""
    chosen = True
    while chosen:
        chosen = False
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                name = getattr(args, action.dest, None)
                if name in action.choices:
                    parser, chosen = action.choices[name], True
                    break
    return parser


if __name__ == "__main__":
    sys.exit(main())
