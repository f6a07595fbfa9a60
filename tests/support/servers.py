"""Real uvicorn servers on free loopback ports, each in a thread with its own event loop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from proxy.server.protocol import ClientConnections
from proxy.settings import ServerConfig


@contextmanager
def serve_in_thread(app: Any, server: ServerConfig | None = None) -> Iterator[str]:
    """Serve `app` until the block ends, with the connections `serve` makes (deadlines and cap
    from `server`, by default the defaults); yields its base URL, e.g. `http://127.0.0.1:PORT`."""
    server = server or ServerConfig()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=ClientConnections(server, server.max_connections),
        lifespan="on",
        log_level="warning",
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
