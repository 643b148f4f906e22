"""Every option of every subcommand has help text, and --help shows its default."""

from __future__ import annotations

import argparse

from server.cli import DefaultsFormatter, build_parser


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
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
    formatter = DefaultsFormatter("zplex")
    for name, sub in subparsers().items():
        for action in sub._actions:
            if (
                action.option_strings
                and action.nargs != 0
                and action.default not in (None, [], False)
            ):
                if action.default is argparse.SUPPRESS:
                    continue
                assert "default" in (formatter._get_help_string(action) or ""), (name, action.dest)
    assert "(default: WARNING)" in subparsers()["worker"].format_help()
    assert "(default: True)" not in subparsers()["get"].format_help()  # --no-digest is a flag
