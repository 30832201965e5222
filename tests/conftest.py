"""Hypothesis profiles: `ci` (the default, what `make test` runs) and `fuzz`
(`make fuzz`, many more examples).

The running kernel: a test marked ``kernel`` needs root, tracefs, pagemap and gcc.
Where the kernel cannot be observed it skips with the reason, except when
``COWCTX_REQUIRE_KERNEL=1`` (set by ``.ci/run``: on this machine kind the kernel is
always observable), which turns that skip into a failure.  The probe runs once, at
the first such test, never while tests are collected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from cowctx.linux import KernelSession

settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REQUIRE_KERNEL = os.environ.get("COWCTX_REQUIRE_KERNEL") == "1"
_probe: list[str | None] = []


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--screenshot", default=None, help="test_report: also save a screenshot of the report here"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel: needs the running kernel observable (root, tracefs, pagemap, gcc); skips "
        "with the reason elsewhere, fails instead under COWCTX_REQUIRE_KERNEL=1",
    )


def kernel_unavailable() -> str | None:
    """Why the kernel cannot be observed (None when it can), probed once per run."""
    if not _probe:
        from cowctx.linux import kernel_unavailable_reason

        _probe.append(kernel_unavailable_reason())
    return _probe[0]


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs the kernel, or fail it where the kernel is required."""
    if REQUIRE_KERNEL:
        pytest.fail(f"COWCTX_REQUIRE_KERNEL=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        reason = kernel_unavailable()
        if reason is not None:
            skip_or_fail(f"kernel not observable: {reason}")


@pytest.fixture(scope="session")
def kernel_session() -> Iterator[KernelSession]:
    """One tracefs instance for every kernel test that does not test the instance itself."""
    from cowctx.linux import KernelSession

    reason = kernel_unavailable()
    if reason is not None:
        skip_or_fail(f"kernel not observable: {reason}")
    with KernelSession() as session:
        yield session
