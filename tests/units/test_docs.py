"""The docs stand alone: README.md, docs/ and every ``--help`` text refer to no file outside
the repository, every relative link in README.md and docs/ leads to a file (and heading) that
exists, and docs/protocol.md names every command, error code, limit and frame type the code
has."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.cli import build_parser
from server.protocol.errors import ErrorCode
from server.protocol.frames import FrameType
from server.protocol.limits import Limits
from server.protocol.payloads import CONTEXTS, ENCODINGS
from workers.commands import TABLE

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

#: Names of files that live outside the repository (the spec and design pages of old), and
#: the directory that held them. ``../`` is checked apart (a link to ``../README.md`` from
#: docs/ stays inside the repository); ``.../debugreflect`` is not a parent directory.
OUTSIDE_NAMES = re.compile(r"shared/|PROTOCOL\.md|DESIGN\.md")
PARENT_PATH = re.compile(r"(?<![.\w])(?:\.\./)+[^\s)\]`'\"<>]*")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def outside_references(text: str, base: Path | None = None) -> list[str]:
    """The references to files outside the repository in ``text``. A ``../`` path counts
    unless ``base`` is given and it resolves inside the repository from there."""
    found = [m.group(0) for m in OUTSIDE_NAMES.finditer(text)]
    for m in PARENT_PATH.finditer(text):
        if base is None or not (base / m.group(0)).resolve().is_relative_to(ROOT):
            found.append(m.group(0))
    return found


def prose_lines(text: str) -> Iterator[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose_lines(path.read_text()):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    out: list[str] = []
    for line in prose_lines(path.read_text()):
        out.extend(LINK.findall(re.sub(r"`[^`]*`", "", line)))  # no links inside code spans
    return out


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases once
                yield from all_parsers(sub)


# ---- the checker itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The wire contract is `../shared/PROTOCOL.md`.",
        "a limit of PROTOCOL.md section 6",
        "the layering of DESIGN.md",
        "see /work/shared/notes",
        "see [the spec](../../spec.md)",
    ],
)
def test_checker_finds_references_outside(text: str) -> None:
    assert outside_references(text, ROOT / "docs")


@pytest.mark.parametrize(
    "text",
    [
        "see docs/protocol.md section 6 and docs/design.md",
        "`POST .../debugreflect` and `.../multirequest`",
        "see [Debugging frames](../README.md#debugging-frames)",
        "a shared or replicated directory",
    ],
)
def test_checker_accepts_references_inside(text: str) -> None:
    assert outside_references(text, ROOT / "docs") == []


def test_slugs_follow_github() -> None:
    assert slug("1. Frames") == "1-frames"
    assert slug("sender-protocol-settings (0x8)") == "sender-protocol-settings-0x8"
    assert slug("A worked HTTP example") == "a-worked-http-example"
    assert slug("The `zplex frames` tool") == "the-zplex-frames-tool"


# ---- the docs -------------------------------------------------------------------------------


def test_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "docs/protocol.md", "docs/protocol-decisions.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_doc_refers_outside_the_repository(path: Path) -> None:
    assert outside_references(path.read_text(), path.parent) == []


def test_no_help_text_refers_outside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per help text: no reference split
    parsers = list(all_parsers(build_parser()))
    assert len(parsers) > 10  # every subcommand, and the actions of `zplex frames`
    for parser in parsers:
        assert outside_references(parser.format_help()) == [], parser.prog


def test_no_source_refers_outside_the_repository() -> None:
    """Docstrings and comments (which ``--help`` and readers of the code see) cite the docs
    inside the repository."""
    for package in ("server", "workers", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found = OUTSIDE_NAMES.findall(path.read_text())
            assert found == [], path.relative_to(ROOT)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_lead_to_files_and_headings(path: Path) -> None:
    for link in links(path):
        if SCHEME.match(link):
            continue  # https:, mailto:
        target, _, fragment = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        assert file.is_relative_to(ROOT), f"{link} leaves the repository"
        assert file.exists(), f"{link}: no such file"
        if fragment and file.suffix == ".md":
            assert fragment in anchors(file), f"{link}: no such heading"


# ---- docs/protocol.md covers what the code has ------------------------------------------------


def protocol_text() -> str:
    return (ROOT / "docs" / "protocol.md").read_text()


def test_protocol_names_every_command_error_limit_and_frame_type() -> None:
    text = protocol_text()
    quoted = [
        *TABLE,
        *(code.value for code in ErrorCode),
        *(field.name for field in dataclasses.fields(Limits)),
        *ENCODINGS,
        *CONTEXTS,
    ]
    assert [name for name in quoted if f"`{name}`" not in text] == []
    rows = [f"| {t.value:#x} | {t.wire_name} |" for t in FrameType]  # the frame types table
    assert [row for row in rows if row not in text] == []


def test_protocol_announces_the_default_limits() -> None:
    """The server's settings shown in section 3 carry the real defaults."""
    text = protocol_text()
    for name, value in Limits().to_wire().items():
        assert f'"{name}": {value}' in text, name


def test_every_test_the_guarantees_name_exists() -> None:
    """README's "Guarantees" names the test behind each guarantee (``file::name``, or
    ``::name`` for one in the file named before it): each must exist, so a renamed or removed
    test cannot leave a guarantee unproven in silence."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Guarantees\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`((?:tests/[\w/]+\.py)?)::(test_\w+)`", section)
    assert len(named) >= 20
    current = None
    for path, name in named:
        current = path or current
        assert current is not None, name
        source = (ROOT / current).read_text()
        assert re.search(rf"^(?:async )?def {name}\(", source, re.MULTILINE), f"{current}::{name}"


def test_the_layout_names_every_module() -> None:
    """README's "Layout" is a map of the tree: every module of server/, workers/ and bench/ is
    named there, so a new module cannot go unexplained."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    modules = [
        path.name
        for package in ("server", "workers", "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "__init__.py"
    ]
    assert [name for name in modules if name not in section] == []
