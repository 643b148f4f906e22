"""The stdio transport: one connection on stdin/stdout (``zplex serve --stdio``, e.g. behind
ssh), with stdin and stdout as one asyncio transport for a :class:`FrontConnection`."""

from __future__ import annotations

import asyncio
import os

from server.connection import FrontConnection


class StdioTransport(asyncio.Transport):
    def __init__(self, reader: asyncio.ReadTransport, writer: asyncio.WriteTransport) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writer.write(data)

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    def pause_reading(self) -> None:
        self.reader.pause_reading()

    def resume_reading(self) -> None:
        self.reader.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.writer.get_write_buffer_size()


class _StdinProtocol(asyncio.Protocol):
    def __init__(self, conn: FrontConnection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.data_received(data)

    def eof_received(self) -> bool:
        return self.conn.eof_received()


class _StdoutProtocol(asyncio.Protocol):
    def __init__(self, conn: FrontConnection, done: asyncio.Event) -> None:
        self.conn = conn
        self.done = done

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)
        self.done.set()


async def serve_stdio(conn: FrontConnection, done: asyncio.Event) -> None:
    """Serve ``conn`` on this process's stdin and stdout; ``done`` is set when it ends."""
    loop = asyncio.get_running_loop()
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    reader, _ = await loop.connect_read_pipe(lambda: _StdinProtocol(conn), stdin)
    writer, _ = await loop.connect_write_pipe(lambda: _StdoutProtocol(conn, done), stdout)
    conn.connection_made(StdioTransport(reader, writer))
