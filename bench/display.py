"""The bench's progress display, on stderr: a transient rich progress bar per phase on a
terminal (:class:`RichDisplay`), plain lines for logs and pipes (:class:`PlainDisplay`)."""

from __future__ import annotations

from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class Display(Protocol):
    def info(self, message: str) -> None: ...

    def start(self, label: str, total: float | None) -> None: ...

    def update(self, completed: float, detail: str) -> None: ...

    def finish(self, summary: str) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """Plain lines (for logs and pipes): one when a phase starts, one when it ends."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def info(self, message: str) -> None:
        print(f"zplex bench: {message}", file=self.stream, flush=True)

    def start(self, label: str, total: float | None) -> None:
        self.info(f"{label} ...")

    def update(self, completed: float, detail: str) -> None:
        pass

    def finish(self, summary: str) -> None:
        self.info(summary)

    def close(self) -> None:
        pass


class RichDisplay:
    """A transient rich progress bar per phase on a terminal; phase summaries stay."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.progress.start()

    def info(self, message: str) -> None:
        self.progress.console.print(Text(message, style="dim"))

    def start(self, label: str, total: float | None) -> None:
        self._drop()
        self.task = self.progress.add_task(label, total=total, detail="")

    def update(self, completed: float, detail: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=completed, detail=detail)

    def finish(self, summary: str) -> None:
        self._drop()
        self.progress.console.print(Text(summary, style="dim"))

    def _drop(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def close(self) -> None:
        self._drop()
        self.progress.stop()


def make_display(stream: IO[str]) -> Display:
    if stream.isatty():
        return RichDisplay(Console(file=stream))
    return PlainDisplay(stream)
