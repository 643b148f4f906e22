"""Shared pytest configuration.

Hypothesis profiles, chosen by the ``HYPOTHESIS_PROFILE`` environment variable:
``ci`` (the default: ~100 examples per property, no deadline, fast enough for every run) and
``dev`` (many more examples, for hunting bugs locally).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
