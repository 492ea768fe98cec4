"""Hypothesis settings shared by the fuzz tests (`tests/test_fuzz_*.py`): every reader of user or saved files
gets arbitrary input and must return a parsed value or raise the project's own `EmbedstoreError`.

The default profile keeps the suite fast and repeatable: 200 examples per reader, derandomized (the same
examples on every run, so CI cannot flake), no example database written. For a longer, random hunt:

    HYPOTHESIS_PROFILE=long python -m pytest -q tests/test_fuzz_*.py      # 5,000 fresh examples per reader

and `--hypothesis-show-statistics` prints how many examples each reader was given.
"""
import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                     HealthCheck.data_too_large])
settings.register_profile("default", max_examples=200, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=5000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
