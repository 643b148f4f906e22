"""Every option of every subcommand has help text, and --help shows its default; the usage
lines read as commands."""

from __future__ import annotations

import argparse

from server.cli import DefaultsFormatter, build_parser


def subparsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by its name, nested ones (``frames decode``, ``bench
    compare``) included."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}"] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(build_parser(), "")
    return found


def test_every_option_has_help() -> None:
    missing = [
        f"{name} {action.dest}"
        for name, sub in subparsers().items()
        for action in sub._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_help_shows_defaults() -> None:
    """Every option that takes a value, and every optional argument, says its default (or
    that it is required); a flag's help says what it switches on."""
    formatter = DefaultsFormatter("zplex")
    silent = [
        f"zplex {name} {action.option_strings or action.dest}"
        for name, sub in subparsers().items()
        for action in sub._actions
        if action.nargs != 0
        and (action.option_strings or action.nargs == "?")
        and action.help is not argparse.SUPPRESS
        and not isinstance(action, argparse._SubParsersAction)
        and not any(
            w in (formatter._get_help_string(action) or "") for w in ("default", "required")
        )
    ]
    assert silent == []
    assert "(default: WARNING)" in subparsers()["worker"].format_help()
    assert "(default: True)" not in subparsers()["get"].format_help()  # --no-digest is a flag


def test_bench_usage_reads_as_two_commands() -> None:
    text = subparsers()["bench"].format_help()
    assert text.startswith(
        "usage: zplex bench [options]\n       zplex bench compare A.json B.json [...]\n"
    )
    assert "positional arguments" not in text  # compare is not listed as an argument
    assert "zplex bench compare --help" in text  # the epilog points to it
    compare = subparsers()["bench compare"].format_help()
    assert compare.startswith("usage: zplex bench compare A.json B.json [...]\n")
