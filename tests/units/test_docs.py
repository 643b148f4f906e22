"""The docs stand alone: README.md, docs/ and every ``--help`` text refer to no file outside
the repository, every relative link in README.md and docs/ leads to a file (and heading) that
exists, every part of a page named in prose (``see "Fronts"``), every test and repository path
the docs name exist, the defaults they quote are the code's, and docs/protocol.md names every
command, error code, limit and frame type the code has."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.cli import build_parser
from server.config import ServeConfig
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
#: A part of a page named in prose: ``see "Fronts"`` (``in [the page](link)`` for another
#: page), ``README's "Performance"``, ``"Chaos" above``, ``see Store below``.
SECTION_REF = re.compile(
    r'(?:\bsee |README\'s )"(?P<quoted>[^"]+)"'
    r"(?:\s+in\s+(?:the\s+)?\[[^\]]*\]\((?P<file>[^)#\s]*)[^)]*\))?"
    r'|"(?P<near>[^"]+)"\s+(?:above|below)\b'
    r"|\bsee (?P<word>[A-Z]\w+) (?:above|below)\b"
)
#: The same in the source's docstrings and comments: ``(README, "Fronts")``.
SOURCE_REF = re.compile(r'\b(README|docs/[\w-]+\.md), "([^"]+)"')
#: The same in a help text: ``(docs/protocol.md, section 6 Limits)``.
HELP_REF = re.compile(r"\b(docs/[\w-]+\.md), section (\d+) ([A-Z][\w ]*?)\)")
#: The bold words that open a paragraph or a list item (``**Chaos.**``): prose names them too.
BOLD_LEAD = re.compile(r"^\s*(?:- )?\*\*([^*]+?)\.?\*\*")
#: A test named by the docs: ``tests/x.py::test_name``, or ``::test_name`` in the file before.
TEST_REF = re.compile(r"`((?:tests/[\w/]+\.py)?)::(test_\w+)`")
#: A file or directory of the repository named by the docs, from the repository's root.
REPO_PATH = re.compile(r"`((?:server|workers|bench|tests|docs)/[\w./-]*)`")


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


def section_names(path: Path) -> set[str]:
    """What prose may call a part of ``path``: its headings, and the bold words that open its
    paragraphs."""
    names: set[str] = set()
    for line in prose_lines(path.read_text()):
        m = HEADING.match(line) or BOLD_LEAD.match(line)
        if m:
            names.add(m.group(m.lastindex or 0))
    return names


def names_a_section(name: str, names: set[str]) -> bool:
    """``name`` is one of ``names``, or the start of a heading (``"Small zstd match tables"``
    for "Small zstd match tables: the choice")."""
    return name in names or any(n.startswith(f"{name}:") for n in names)


def prose(path: Path) -> str:
    """A Markdown page's prose on one line: no fenced blocks, no code spans."""
    return re.sub(r"`[^`]*`", "", " ".join(prose_lines(path.read_text())))


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


def readme_section(heading: str) -> str:
    """The text of the README's ``## heading`` section."""
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def named_tests(text: str) -> list[str]:
    """The tests ``text`` names, as ``file::name`` (``::name`` is in the file named before)."""
    named = []
    current = None
    for file, name in TEST_REF.findall(text):
        current = file or current
        assert current is not None, name
        named.append(f"{current}::{name}")
    return named


def defined(test: str) -> bool:
    """Whether ``file::name`` is a test function of that file."""
    file, _, name = test.partition("::")
    path = ROOT / file
    source = path.read_text() if path.is_file() else ""
    return re.search(rf"^(?:async )?def {name}\(", source, re.MULTILINE) is not None


def test_every_test_the_guarantees_name_exists() -> None:
    """README's "Guarantees" names the test behind each guarantee (``file::name``, or
    ``::name`` for one in the file named before it): each must exist, so a renamed or removed
    test cannot leave a guarantee unproven in silence."""
    named = named_tests(readme_section("Guarantees"))
    assert len(named) >= 20
    assert [test for test in named if not defined(test)] == []


def test_the_layout_names_every_module() -> None:
    """README's "Layout" is a map of the tree: every module of server/, workers/ and bench/ is
    named there, so a new module cannot go unexplained."""
    section = readme_section("Layout")
    modules = [
        path.name
        for package in ("server", "workers", "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "__init__.py"
    ]
    assert [name for name in modules if name not in section] == []


# ---- what the docs name exists ----------------------------------------------------------------


def test_the_section_checker_reads_prose_references() -> None:
    text = (
        'see "Fronts" and "Chaos" above; (see "Workers" in\n  [the decisions](d.md#workers)); '
        'the README\'s "Performance" section; see Store below'
    )
    found = [(m["quoted"] or m["near"] or m["word"], m["file"]) for m in SECTION_REF.finditer(text)]
    assert found == [
        ("Fronts", None),
        ("Chaos", None),
        ("Workers", "d.md"),
        ("Performance", None),
        ("Store", None),
    ]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_part_of_a_page_named_in_prose_exists(path: Path) -> None:
    """``see "Warnings"``, ``"Chaos" above``, ``see "Workers" in [...](page)``: a heading, or
    the bold words that open a paragraph, of that page (or of the README for ``README's``)."""
    missing = []
    for m in SECTION_REF.finditer(prose(path)):
        name = m["quoted"] or m["near"] or m["word"]
        if m["file"]:
            target = (path.parent / m["file"]).resolve()
        elif m.group(0).startswith("README's"):
            target = ROOT / "README.md"
        else:
            target = path
        if not names_a_section(name, section_names(target)):
            missing.append(f"{name!r} in {target.relative_to(ROOT)}")
    assert missing == []


def test_every_part_of_a_page_the_source_names_exists() -> None:
    """Docstrings and comments cite a part of the docs as ``(README, "Fronts")``."""
    missing = []
    for package in ("server", "workers", "bench", "tests"):
        for path in sorted((ROOT / package).rglob("*.py")):
            # One line per docstring or comment block: a name may be cut at a line's end.
            text = re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", path.read_text())
            for doc, name in SOURCE_REF.findall(text):
                target = ROOT / ("README.md" if doc == "README" else doc)
                if not target.exists() or not names_a_section(name, section_names(target)):
                    missing.append(f"{path.relative_to(ROOT)}: {doc}, {name!r}")
    assert missing == []


def test_every_section_a_help_text_names_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """``(docs/protocol.md, section 6 Limits)`` in a help text is that page's heading
    "6. Limits"."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per help text: no reference split
    named = 0
    for parser in all_parsers(build_parser()):
        for doc, number, name in HELP_REF.findall(parser.format_help()):
            named += 1
            headings = section_names(ROOT / doc)
            assert names_a_section(f"{number}. {name}", headings), (parser.prog, doc, name)
    assert named >= 2


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_test_and_path_a_page_names_exists(path: Path) -> None:
    """A test the docs cite (``file::name``, or ``::name`` for one in the file named before
    it) and a file of the repository they name (from its root): a rename or a removal must
    reach the docs too."""
    text = path.read_text()
    missing = [p for p in REPO_PATH.findall(text) if not (ROOT / p).exists()]
    missing += [test for test in named_tests(text) if not defined(test)]
    assert missing == []


def test_the_guarantees_command_runs_every_test_they_name() -> None:
    """README's "Guarantees" ends with the one command that runs every guarantee's tests: it
    names every test file the guarantees cite (or a directory holding it)."""
    section = readme_section("Guarantees")
    command = re.search(r"`(\.venv/bin/python -m pytest tests/[^`]*)`", section)
    assert command is not None
    runs = command.group(1).split()[3:]
    cited = {file for file, _name in TEST_REF.findall(section) if file}
    assert len(cited) >= 10
    assert [
        f for f in sorted(cited) if not any(f == r or f.startswith(r + "/") for r in runs)
    ] == []


def test_the_layout_names_only_modules_that_exist() -> None:
    """Every ``name.py`` the README's "Layout" names is a module (or a test) of the tree: a
    renamed or removed module cannot leave its line behind."""
    names = {
        path.name
        for pkg in ("server", "workers", "bench", "tests")
        for path in (ROOT / pkg).rglob("*.py")
    }
    named = set(re.findall(r"\b(\w+\.py)\b", readme_section("Layout")))
    assert len(named) > 50
    assert sorted(named - names) == []


def test_the_defaults_a_help_text_states_are_the_parsers() -> None:
    """An option whose help says ``(default 30)`` has 30 as its default."""
    wrong = []
    for parser in all_parsers(build_parser()):
        for action in parser._actions:
            default = action.default
            if isinstance(default, bool) or not isinstance(default, int | float):
                continue
            m = re.search(r"\bdefault:? (-?\d+(?:\.\d+)?)\b", action.help or "")
            if m and float(m.group(1)) != default:
                wrong.append(f"{parser.prog} {action.option_strings}: {m.group(1)} != {default}")
    assert wrong == []


#: ``zplex serve``'s options whose help and README row state the default of a ServeConfig field.
SERVE_DEFAULTS = {
    "--host": "host",
    "--port": "port",
    "--store": "store",
    "--level": "level",
    "--max-generate-bytes": "max_generate_bytes",
    "--small-tables-from": "small_tables_from",
    "--worker-silence": "worker_silence_s",
}


def test_the_serve_defaults_in_help_and_readme_are_the_configs() -> None:
    """The server's options take their defaults from ServeConfig (the parser's are None):
    the help text and the README's table of options state those."""
    serve = next(p for p in all_parsers(build_parser()) if p.prog.endswith(" serve"))
    helps = {flag: action.help or "" for action in serve._actions for flag in action.option_strings}
    rows = {
        row.split("`")[1].split()[0]: row
        for row in readme_section("Running the server").splitlines()
        if row.startswith("| `--")
    }
    config = ServeConfig()
    wrong = []
    for flag, field in SERVE_DEFAULTS.items():
        value = getattr(config, field)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        stated = re.compile(rf"\bdefault:? `?(?:\./)?{re.escape(text)}(?![\w.])")
        wrong += [
            f"{where} {flag}"
            for where, doc in (("help", helps[flag]), ("README", rows[flag]))
            if not stated.search(doc)
        ]
    assert wrong == []
