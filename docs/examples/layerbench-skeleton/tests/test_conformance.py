"""Run layerbench's conformance suite on the skeleton driver: `pytest tests/` in this package.

The same as `pytest --pyargs layerbench.testing.conformance --layerbench-driver skeleton`.
"""

from layerbench.testing.conformance import *  # noqa: F403

LAYERBENCH_DRIVERS = ["skeleton"]
