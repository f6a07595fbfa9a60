"""The connection cap fits the process's file descriptor limit."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from proxy.server.descriptors import RESERVED_DESCRIPTORS, connection_cap
from proxy.settings import ConfigError


def test_the_configured_cap_stands_when_the_fd_limit_holds_it() -> None:
    assert connection_cap(1000, 1_048_576) == 1000


def test_the_cap_is_half_of_the_fd_limit_after_the_reserve_when_that_is_lower() -> None:
    assert connection_cap(10_000, 256) == (256 - RESERVED_DESCRIPTORS) // 2


def test_an_unlimited_fd_limit_leaves_the_configured_cap() -> None:
    assert connection_cap(10_000, resource.RLIM_INFINITY) == 10_000


def test_an_fd_limit_without_room_for_a_connection_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ulimit -n"):
        connection_cap(10_000, RESERVED_DESCRIPTORS + 1)


def test_the_soft_fd_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = 256, 512

    def lower_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    script = (
        "import resource\n"
        "from proxy.server.descriptors import raise_descriptor_limit\n"
        "print(raise_descriptor_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        preexec_fn=lower_soft_limit,
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.split() == [str(hard)] * 3
