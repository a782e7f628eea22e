"""Free loopback ports for the servers tests and benchmarks start.

>>> a, b = free_ports(2)
>>> a != b and 0 < free_port() < 65536
True
"""

from __future__ import annotations

import contextlib
import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago on ``host`` (all held open until
    all are chosen, so none comes back twice)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port that was free a moment ago on ``host``."""
    return free_ports(1, host)[0]


__all__ = ["free_port", "free_ports"]
