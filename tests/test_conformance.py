"""Every installed driver (built-ins and the skeleton, when installed) runs the conformance suite.

A driver that cannot run here skips with its probe's reason. Engine drivers (containerd's
snapshotters, Podman) run it in their own modules, on one engine each (tests/integration/test_containerd.py).
"""

from __future__ import annotations

import pytest

from layerbench.plugins import default_plugins
from layerbench.testing.conformance import *  # noqa: F403  the cases

pytestmark = pytest.mark.mounts

LAYERBENCH_DRIVERS = sorted(name for name, cls in default_plugins().registry.drivers.items() if cls.engine is None)
