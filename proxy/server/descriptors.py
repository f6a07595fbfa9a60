"""How many client connections a process can hold, given its file descriptor limit."""

from __future__ import annotations

import resource

from proxy.settings import ConfigError

# What a process holds besides client and upstream connections: about 25 at rest here (the
# event loop, the listening socket, logs, the journal, SQLite's files), up to 30 more for a full
# database pool (5 + 10 overflow connections, two files each on SQLite), and some to spare for
# alert webhooks, DNS and the metrics files of other workers.
RESERVED_DESCRIPTORS = 64


def raise_descriptor_limit() -> int:
    """Raise the soft fd limit to the hard one (worker processes inherit it); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


def connection_cap(max_connections: int, descriptor_limit: int) -> int:
    """`max_connections`, or fewer when the fd limit cannot hold them: a client connection can
    hold an upstream connection too, so each counts twice, after the reserved descriptors."""
    if descriptor_limit == resource.RLIM_INFINITY:
        return max_connections
    room = (descriptor_limit - RESERVED_DESCRIPTORS) // 2
    if room < 1:
        raise ConfigError(
            f"the file descriptor limit ({descriptor_limit}) leaves no room for client "
            f"connections: raise it (ulimit -n) to at least {RESERVED_DESCRIPTORS + 2}"
        )
    return min(max_connections, room)
