"""One HTTP worker process of a pod: `python -m serving.worker LISTEN_FD LINK_FD SLOT`.

The model process (`serving.server`) starts it with two inherited file descriptors: the pod's
listening socket, shared by every worker, and this worker's Unix socket to the model process. The
worker reads the model process's HELLO (its settings and the catalog of models), then serves the
same app as a single-process pod over a `RemotePool`. It never imports torch. If the model process
goes away, the worker shuts down.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence

from serving import app as app_module
from serving import server
from serving.frontend.remote import RemotePool, handshake

__all__ = ["main"]

log = logging.getLogger("carpool.worker")


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    listen_fd, link_fd, slot = (int(arg) for arg in (sys.argv[1:] if argv is None else argv))
    listener = socket.socket(fileno=listen_fd)
    link = socket.socket(fileno=link_fd)
    hello = handshake(link)
    backend = RemotePool(hello)
    settings = backend.settings
    server.configure_logging(settings)

    async def connect() -> None:
        await backend.connect(link)
        app_module.freeze_heap()

    app = app_module.create_app(settings, backend, on_start=connect)
    config = uvicorn.Config(app, **server.uvicorn_options(settings))
    runner = uvicorn.Server(config)

    def lost() -> None:
        log.error("worker %d: the model process is gone; stopping", slot)
        runner.should_exit = True

    backend.on_lost = lost
    runner.run(sockets=[listener])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
