"""Command-line client for people: ``zplex get``, ``zplex put``, ``zplex delete``,
``zplex list``, ``zplex stats``, ``zplex capabilities``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench import connect_failure
from bench.client import Client, ConnectionLost, ServerError

TOKEN_ENV = "ZPLEX_WRITE_TOKEN"
#: The subcommands that send the write token.
WRITES = ("put", "delete")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[v6]:PORT``; raises ValueError with a clear message."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class LocalError(Exception):
    """A failure on this side (a file to read or write), not the server's or the network's."""


def positive_seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (a byte offset or length, a count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--connect",
        default="127.0.0.1:7410",
        metavar="HOST:PORT",
        help="server address (default 127.0.0.1:7410)",
    )
    p.add_argument(
        "--encoding",
        default="zstd-8mb",
        choices=("zstd-8mb", "zlib", "identity"),
        help="preferred response encoding (default zstd-8mb)",
    )
    p.add_argument("--level", type=int, default=3, help="compression level wish (default 3)")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="per-request timeout; connecting is given 10 s, or this if shorter (default 30)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("get", help="fetch an object from a server's store")
    p.add_argument("key", help="the object's key")
    p.add_argument("-o", "--output", help="write the object here (default: stdout)")
    p.add_argument("--offset", type=non_negative_int, help="first byte of a range (default 0)")
    p.add_argument("--length", type=non_negative_int, help="bytes of a range (default: to the end)")
    p.add_argument(
        "--no-digest",
        dest="digest",
        action="store_false",
        help="ask for a header without the body's digest (saves its bytes on the wire; the "
        "body is then checked against its size only)",
    )
    _common(p)
    p.set_defaults(func=_get)

    p = subparsers.add_parser("put", help="store a file under a key (needs the write token)")
    p.add_argument("key", help="the key to store the file under")
    p.add_argument("file", help="file to upload, or - for stdin")
    p.add_argument("--token", help=f"write token (default: ${TOKEN_ENV})")
    _common(p)
    p.set_defaults(func=_put)

    p = subparsers.add_parser(
        "delete",
        help="remove an object from a server's store (needs the write token and a server "
        "started with --allow-delete)",
    )
    p.add_argument("key", help="the object's key")
    p.add_argument("--token", help=f"write token (default: ${TOKEN_ENV})")
    _common(p)
    p.set_defaults(func=_delete)

    p = subparsers.add_parser("list", help="list the keys of a server's store")
    p.add_argument(
        "prefix", nargs="?", default=None, help="only keys under this prefix (default: every key)"
    )
    p.add_argument(
        "--limit", type=non_negative_int, help="at most this many keys (default: every key)"
    )
    _common(p)
    p.set_defaults(func=_list)

    p = subparsers.add_parser("stats", help="show a server's per-process counters")
    p.add_argument("--json", action="store_true", help="print the raw stats as JSON")
    _common(p)
    p.set_defaults(func=_stats)

    p = subparsers.add_parser("capabilities", help="show a server's commands and limits")
    _common(p)
    p.set_defaults(func=_capabilities)


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"zplex {command}: {message}", file=sys.stderr)
    return status


def _connect(args: argparse.Namespace, token: str | None, handshake: float) -> Client:
    """The connection to ``--connect``, opened within ``handshake`` seconds;
    :class:`ValueError` for a malformed address."""
    host, port = parse_address(args.connect)
    return Client.connect(
        host,
        port,
        encodings=(args.encoding, "identity"),
        level=args.level,
        token=token,
        timeout=args.timeout,
        connect_timeout=handshake,
    )


def _run(args: argparse.Namespace, command: str, action: Any) -> int:
    """Connect, run ``action(client)``, and turn every failure into a message that names the
    thing at fault: a local file, the host's name, the address, the server, the network."""
    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV)
    # A server gets the bench's handshake timeout (or --timeout if shorter) to answer.
    handshake = min(args.timeout, connect_failure.HANDSHAKE_TIMEOUT_S)
    try:
        client = _connect(args, token if command in WRITES else None, handshake)
    except ValueError as exc:
        return _fail(command, str(exc), 2)
    except connect_failure.CONNECT_ERRORS as exc:
        reason = connect_failure.describe_connect_failure(args.connect, exc, handshake)
        return _fail(command, reason)
    try:
        with client:
            result: int = action(client)
            return result
    except LocalError as exc:
        return _fail(command, str(exc))
    except ValueError as exc:
        return _fail(command, str(exc), 2)
    except ServerError as exc:
        return _fail(command, _server_error(exc, command, args, token))
    except BrokenPipeError:
        raise  # our standard output was closed: zplex's main ends quietly
    except (ConnectionLost, OSError, TimeoutError) as exc:
        return _fail(command, f"cannot talk to {args.connect}: {exc or type(exc).__name__}")


def _server_error(
    exc: ServerError, command: str, args: argparse.Namespace, token: str | None
) -> str:
    """An error-response as a message that names what is at fault, and what to do."""
    message = f"{exc.code}: {exc.message}"
    if exc.code == "forbidden" and command in WRITES:
        message += (
            " (pass the server's write token with --token or ZPLEX_WRITE_TOKEN)"
            if not token
            else " (the token given with --token or ZPLEX_WRITE_TOKEN is not the server's)"
        )
    elif command in ("get", "delete") and exc.code == "not-found":
        message = f"not-found: no object {args.key!r} in the store of {args.connect}"
    elif command == "delete" and exc.code == "unknown-command":
        message = (
            f"unknown-command: the server at {args.connect} does not offer delete (it was not "
            "started with --allow-delete)"
        )
    return message


def _get(args: argparse.Namespace) -> int:
    if args.output:
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            return _fail("get", f"cannot write {args.output}: no such directory {parent}", 2)
        if os.path.isdir(args.output):
            return _fail("get", f"cannot write {args.output}: it is a directory", 2)
        if not os.access(parent, os.W_OK):
            return _fail("get", f"cannot write {args.output}: {parent} is not writable", 2)

    def action(client: Client) -> int:
        response = client.get(args.key, offset=args.offset, length=args.length, digest=args.digest)
        if response.verify_digest() is False:
            return _fail("get", "the body does not match its digest")
        if response.header.get("size") not in (None, len(response.body)):
            return _fail("get", "the body does not have the size its header gives")
        if args.output:
            try:
                with open(args.output, "wb") as f:
                    f.write(response.body)
            except OSError as exc:
                raise LocalError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        else:
            sys.stdout.buffer.write(response.body)
            sys.stdout.buffer.flush()
        print(
            f"{len(response.body)} bytes, {response.wire_bytes} on the wire "
            f"(ratio {response.ratio:.2f})",
            file=sys.stderr,
        )
        return 0

    return _run(args, "get", action)


def _put(args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
    except OSError as exc:
        return _fail("put", f"cannot read {args.file}: {exc.strerror}", 2)

    def action(client: Client) -> int:
        header = client.put(args.key, data).header
        print(f"{args.key}: {header.get('size')} bytes, {header.get('digest')}")
        return 0

    return _run(args, "put", action)


def _delete(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        header = client.delete(args.key).header
        print(f"{args.key}: removed ({header.get('size')} bytes)")
        return 0

    return _run(args, "delete", action)


def _list(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        for key, size in client.list(args.prefix, args.limit).header.get("keys", []):
            print(f"{size:>12}  {key}")
        return 0

    return _run(args, "list", action)


def _capabilities(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        print(json.dumps(client.capabilities().header, indent=2, sort_keys=True))
        return 0

    return _run(args, "capabilities", action)


def _stats(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        header = client.stats().header
        if args.json:
            print(json.dumps(header, indent=2, sort_keys=True))
            return 0
        from rich.console import Console
        from rich.table import Table

        table = Table(title="zplex stats")
        columns = ("proc", "pid", "user s", "sys s", "RSS MiB", "strm", "reqs", "raw MB")
        for column in (*columns, "wire MB", "ratio"):
            # Names (front0*, w3 remote) and ratios are never cut; other headers wrap instead.
            whole = {"proc": 9, "ratio": 5}.get(column)
            table.add_column(column, justify="right", no_wrap=bool(whole), min_width=whole)
        front = header.get("front", {})
        # A row per front (``fronts``); the one that answered is marked with a star.
        for f in header.get("fronts") or [front]:
            answered = "*" if f.get("pid") == front.get("pid") and "fronts" in header else ""
            table.add_row(
                f"front{f.get('index', '')}{answered}",
                str(f.get("pid")),
                f"{f.get('cpu_user', 0):.2f}",
                f"{f.get('cpu_system', 0):.2f}",
                f"{f.get('rss', 0) / 2**20:.1f}",
                str(f.get("streams", "")),
                str(f.get("requests", "")),
                "",
                "",
                "",
            )
        for w in header.get("workers", []):
            raw, wire = w.get("bytes_raw", 0), w.get("bytes_wire", 0)
            table.add_row(
                f"w{w.get('index', '')}" + (" remote" if w.get("remote") else ""),
                str(w.get("pid")),
                f"{w.get('cpu_user', 0):.2f}",
                f"{w.get('cpu_system', 0):.2f}",
                f"{w.get('rss', 0) / 2**20:.1f}",
                str(w.get("streams", "")),
                str(w.get("requests", "")),
                f"{raw / 1e6:.2f}",
                f"{wire / 1e6:.2f}",
                f"{raw / wire:.2f}" if wire else "-",
            )
        Console().print(table)
        return 0

    return _run(args, "stats", action)
