"""Test configuration: the repository on sys.path, markers, hypothesis profiles."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=500, deadline=None)
    settings.register_profile("dev", max_examples=100, deadline=None)
    settings.register_profile("nightly", max_examples=5000, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; excluded from CI unless asked for")
    config.addinivalue_line("markers", "root: needs root and ip netns")
