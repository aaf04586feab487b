"""Every installed driver (built-ins and the skeleton, when installed) runs the conformance suite.

A driver that cannot run here skips with its probe's reason.
"""

from __future__ import annotations

import pytest

from layerbench.harness.conformance import *  # noqa: F401,F403  the cases
from layerbench.harness.plugins import default_plugins

pytestmark = pytest.mark.mounts

LAYERBENCH_DRIVERS = sorted(default_plugins().registry.drivers)
