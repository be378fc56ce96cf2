"""Finding free ports on loopback (both address families, as pages may reach either)."""

from __future__ import annotations

import contextlib
import errno
import socket

LOOPBACKS = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))


def port_free(port: int) -> bool:
    for family, host in LOOPBACKS:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:  # no IPv6 on this machine: fine
                    continue
                return False
    return True


def free_block(start: int, count: int, limit: int = 65535) -> int:
    """The first port p >= start such that p .. p+count-1 are all free."""
    port = start
    while port + count - 1 <= limit:
        taken = next((p for p in range(port, port + count) if not port_free(p)), None)
        if taken is None:
            return port
        port = taken + 1
    raise OSError(f"no block of {count} free ports from {start} up")


def any_free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
