"""Run layerbench's conformance suite on the skeleton driver: `pytest tests/` in this package.

The same as `pytest --pyargs layerbench.harness.conformance --layerbench-driver skeleton`.
"""

from layerbench.harness.conformance import *  # noqa: F401,F403

LAYERBENCH_DRIVERS = ["skeleton"]
