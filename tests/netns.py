"""A network namespace of the test's own: the body and every process it starts reach no real interface."""
from __future__ import annotations

import ctypes
import os
import subprocess
from contextlib import contextmanager

import pytest

CLONE_NEWNET = 0x40000000


@contextmanager
def network_namespace(commands: list[str], links: list[str], why: str):
    """Run the body in a new network namespace set up by `commands` (ip ...), checked to hold exactly `links`, then
    come back to the old one. Skipped (with `why`) where the namespace cannot be made: not root, or no unshare."""
    if os.geteuid() != 0:
        pytest.skip(f"{why}, which needs root")
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            pytest.skip(f"cannot make a network namespace: {os.strerror(ctypes.get_errno())}")
        for command in commands:
            subprocess.run(command.split(), check=True)
        found = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in found.splitlines()) == sorted(links), found
        yield
    finally:
        assert libc.setns(home, CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
        os.close(home)
