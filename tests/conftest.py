"""Shared pytest configuration: Hypothesis profiles and a printed, replayable seed.

Profiles (each property's own ``@settings`` still wins where it sets ``max_examples``):

* ``dev`` -- the default for a developer's ``make test``: 100 examples per property;
* ``ci`` -- chosen when the environment has ``CI=true`` (``.ci/run``): 200 examples;
* ``fuzz`` -- ``make fuzz``: 5,000 examples, and the tests marked ``slow`` run too.

``HYPOTHESIS_PROFILE`` (or pytest's ``--hypothesis-profile``) picks one explicitly. Every run
uses one seed for all its properties, printed at the end (and in the header unless ``-q``)::

    hypothesis profile 'ci', seed 123456 (replay: --hypothesis-profile=ci --hypothesis-seed=123456)

and a failing example is also printed as a ``@reproduce_failure`` blob (``print_blob``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("ci", max_examples=200, **_COMMON)
settings.register_profile("fuzz", max_examples=5000, **_COMMON)


def default_profile(environ: Mapping[str, str] = os.environ) -> str:
    """``HYPOTHESIS_PROFILE`` if set, else ``ci`` under CI (``CI=true``), else ``dev``."""
    explicit = environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    return "ci" if environ.get("CI", "").lower() in ("true", "1", "yes") else "dev"


settings.load_profile(default_profile())


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # One seed per run, chosen here unless given, so that the run can be replayed exactly.
    if config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(random.randrange(1 << 32))


def _replay_line(config: pytest.Config) -> str:
    profile = config.getoption("hypothesis_profile", None) or settings.get_current_profile_name()
    seed = config.getoption("hypothesis_seed", None)
    return (
        f"hypothesis profile {profile!r}, seed {seed} "
        f"(replay: --hypothesis-profile={profile} --hypothesis-seed={seed})"
    )


def pytest_report_header(config: pytest.Config) -> str:
    return _replay_line(config)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    # Always, since ``-q`` hides the header.
    terminalreporter.write_line(_replay_line(config))
