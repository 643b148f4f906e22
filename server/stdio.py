"""The stdio transport: one connection on stdin/stdout (``zplex serve --stdio``, e.g. behind
ssh), with stdin and stdout as one asyncio transport for a :class:`FrontConnection`.

Pipes, sockets and terminals are watched by the event loop. Anything the loop cannot watch
(a regular file, ``< in > out``, or a device such as ``/dev/null``) is read and written
with plain blocking I/O on the loop instead: a chunk per turn of the loop on the way in, each
write at once on the way out; such I/O never waits for a peer.

Any error here (setting up, reading, writing, or raised while handling the input) is
logged and ends the connection, which sets ``done``: the front then shuts down as after a
signal (answers nothing more, stops its workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat

from server.connection import FrontConnection

log = logging.getLogger("zplex.stdio")

#: Bytes read from a regular file per turn of the loop.
READ_CHUNK = 1 << 16


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


class _Session:
    """The connection and what ends it. The protocols catch any error raised into the
    connection and call :meth:`fail`, so that it ends the connection and sets ``done``
    instead of being lost in the event loop."""

    def __init__(self, conn: FrontConnection, done: asyncio.Event) -> None:
        self.conn = conn
        self.done = done
        self.transport: StdioTransport | None = None
        self.ended = False

    def fail(self, exc: BaseException) -> None:
        log.error("stdio connection failed: %s: %s", type(exc).__name__, exc)
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
        self.lost(exc if isinstance(exc, Exception) else None)

    def lost(self, exc: Exception | None) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            self.conn.connection_lost(exc)
        finally:
            self.done.set()


class _StdinProtocol(asyncio.Protocol):
    def __init__(self, session: _Session, writer: asyncio.WriteTransport) -> None:
        self.session = session
        self.writer = writer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The input is ready (nothing has been read yet): only now is the connection made,
        so that its first output, the server's settings, has a transport to go to."""
        assert isinstance(transport, asyncio.ReadTransport)
        self.session.transport = StdioTransport(transport, self.writer)
        try:
            self.session.conn.connection_made(self.session.transport)
        except Exception as exc:
            self.session.fail(exc)

    def data_received(self, data: bytes) -> None:
        try:
            self.session.conn.data_received(data)
        except Exception as exc:
            self.session.fail(exc)

    def eof_received(self) -> bool:
        try:
            return self.session.conn.eof_received()
        except Exception as exc:
            self.session.fail(exc)
            return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:  # a read error (end of input is eof_received)
            self.session.fail(exc)


class _StdoutProtocol(asyncio.Protocol):
    def __init__(self, session: _Session) -> None:
        self.session = session

    def pause_writing(self) -> None:
        self.session.conn.pause_writing()

    def resume_writing(self) -> None:
        self.session.conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.lost(exc)


class BlockingReader(asyncio.ReadTransport):
    """Reads a file the loop cannot watch, one chunk per turn of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: _StdinProtocol) -> None:
        super().__init__()
        self.loop = loop
        self.fd = fd
        self.protocol = protocol
        self.paused = False
        self.closed = False
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if self._handle is None and not self.paused and not self.closed:
            self._handle = self.loop.call_soon(self._read)

    def _read(self) -> None:
        self._handle = None
        if self.paused or self.closed:
            return
        try:
            data = os.read(self.fd, READ_CHUNK)
        except OSError as exc:
            self.protocol.connection_lost(exc)
            return
        if not data:
            self.protocol.eof_received()
            return
        self.protocol.data_received(data)
        self._schedule()

    def is_reading(self) -> bool:
        return not self.paused and not self.closed

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self._schedule()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
        os.close(self.fd)


class BlockingWriter(asyncio.WriteTransport):
    """Writes to a file the loop cannot watch: each write completes at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: _StdoutProtocol) -> None:
        super().__init__()
        self.loop = loop
        self.fd = fd
        self.protocol = protocol
        self.closing = False
        self.lost = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            return
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            log.error("cannot write to stdout: %s", exc.strerror or exc)
            self.closing = True
            self.loop.call_soon(self._lost, exc)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self._lost, None)

    def _lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        os.close(self.fd)
        self.protocol.connection_lost(exc)

    def get_write_buffer_size(self) -> int:
        return 0


def watchable(fd: int) -> bool:
    """Whether the event loop can watch ``fd``: a pipe, a socket or a terminal."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def serve_stdio(conn: FrontConnection, done: asyncio.Event) -> None:
    """Serve ``conn`` on this process's stdin and stdout; ``done`` is set when it ends,
    also when it fails (the error is logged, never raised)."""
    session = _Session(conn, done)
    try:
        await _open(session)
    except Exception as exc:
        session.fail(exc)


async def _open(session: _Session) -> None:
    """Stdout first, then stdin, whose protocol makes the connection before any input is
    read (an asyncio pipe calls connection_made before it starts reading)."""
    loop = asyncio.get_running_loop()
    writer = await _open_writer(loop, os.dup(1), _StdoutProtocol(session))
    stdin = _StdinProtocol(session, writer)
    try:
        reader = await _open_reader(loop, os.dup(0), stdin)
    except BaseException:
        writer.close()
        raise
    if isinstance(reader, BlockingReader):
        stdin.connection_made(reader)
        reader.start()


async def _open_reader(
    loop: asyncio.AbstractEventLoop, fd: int, protocol: _StdinProtocol
) -> asyncio.ReadTransport:
    """A reader of ``fd``, which it owns (closed here if this fails)."""
    try:
        if not watchable(fd):
            return BlockingReader(loop, fd, protocol)
        pipe = os.fdopen(fd, "rb", 0)
    except BaseException:
        os.close(fd)
        raise
    try:
        transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
    except BaseException:
        pipe.close()
        raise
    return transport


async def _open_writer(
    loop: asyncio.AbstractEventLoop, fd: int, protocol: _StdoutProtocol
) -> asyncio.WriteTransport:
    """A writer of ``fd``, which it owns (closed here if this fails)."""
    try:
        if not watchable(fd):
            return BlockingWriter(loop, fd, protocol)
        pipe = os.fdopen(fd, "wb", 0)
    except BaseException:
        os.close(fd)
        raise
    try:
        transport, _ = await loop.connect_write_pipe(lambda: protocol, pipe)
    except BaseException:
        pipe.close()
        raise
    return transport
