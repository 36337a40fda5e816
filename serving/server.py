"""How `carpool serve` runs a pod: one model process, and HTTP worker processes in front of it.

Why several processes. Where the model is fast (a GPU, or a small model), one Python process
cannot parse, validate and answer HTTP as fast as the device computes, and the model thread's own
Python time competes with the event loop for the GIL. So the process `carpool serve` starts is the
**model process**: it owns the models, their batching engines and the model thread, and binds the
listening socket. It then starts `workers` **HTTP worker processes** (`serving.worker`), which
share that socket (the kernel hands each new connection to whichever worker accepts first) and
reach the model process over one Unix socket each (`frontend.hub`, `frontend.remote`). Batching
stays global per model: every worker's requests meet in the same queues.

Lifecycle. SIGTERM or SIGINT to the model process: readiness turns 503, every engine stops holding
batches back (a batch waiting for max_wait_time_ms or min_batch_size leaves at once), the workers
get SIGTERM and finish what they accepted, then the engines drain and the process exits 0. A worker
that dies is started again. `workers=0` serves HTTP from the model process itself (one process, as
in the API tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

from serving import app as app_module
from serving import hardware
from serving.frontend.hub import Hub
from serving.settings import DRAIN_BOUND_S, ServerSettings
from serving.transport import HeadDeadlineProtocol

__all__ = ["GRACEFUL_SHUTDOWN_S", "serve"]

log = logging.getLogger("carpool.server")

GRACEFUL_SHUTDOWN_S = DRAIN_BOUND_S  # how long a worker may take to answer what it accepted once told to stop
RESTART_PAUSE_S = 1.0


def configure_logging(settings: ServerSettings) -> None:
    level = logging.INFO if settings.enable_logging else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """What every HTTP process of the pod runs uvicorn with."""
    return {
        "loop": "uvloop",
        "http": HeadDeadlineProtocol,
        "access_log": settings.enable_logging and settings.access_log,
        "log_level": "info" if settings.enable_logging else "warning",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "backlog": 2048,
    }


def serve(settings: ServerSettings) -> None:
    """Run the pod until SIGTERM or SIGINT."""
    configure_logging(settings)
    if not settings.admin_token:
        log.warning(
            "CARPOOL_ADMIN_TOKEN is not set: anyone who reaches this pod can change its batching "
            "config with POST /batching/configure"
        )
    workers = settings.worker_count(hardware.usable_cpus())
    if workers == 0:
        import uvicorn

        uvicorn.run(
            app_module.create_app(settings),
            host=settings.host,
            port=settings.port,
            **uvicorn_options(settings),
        )
        return
    import uvloop

    listener = socket.create_server((settings.host, settings.port), backlog=2048)
    listener.set_inheritable(True)
    try:
        uvloop.run(_ModelProcess(settings, workers, listener).run())
    finally:
        listener.close()


class _ModelProcess:
    def __init__(self, settings: ServerSettings, workers: int, listener: socket.socket) -> None:
        self.settings = settings
        self.workers = workers
        self.listener = listener
        self.pool = app_module.local_pool(settings)
        self.hub = Hub(self.pool, settings, workers=workers)
        self.stopping = asyncio.Event()
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.pool.metrics.processes = self._pids

    def _pids(self) -> dict[str, int]:
        """The pod's processes for /metrics: this one and each live HTTP worker."""
        return {"model": os.getpid(), **{f"worker-{slot}": p.pid for slot, p in self.processes.items()}}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        log.info(
            "serving on http://%s:%d with %d HTTP worker process(es)",
            self.settings.host,
            self.settings.port,
            self.workers,
        )
        loading = self.pool.start_loading()
        loading.add_done_callback(lambda _: self.hub.share_encoders())
        loading.add_done_callback(lambda _: app_module.freeze_heap())
        keepers = [loop.create_task(self._keep(slot)) for slot in range(self.workers)]
        await self.stopping.wait()
        log.info("stopping: sending what is queued at once, then letting the workers finish")
        self.hub.stopping = True
        self.pool.hurry()
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        await asyncio.gather(*keepers)
        await self.hub.settle()
        await self.pool.drain()
        log.info("stopped")

    async def _keep(self, slot: int) -> None:
        """Run worker `slot`, starting it again whenever it dies, until the pod stops."""
        while not self.stopping.is_set():
            process = await self._start(slot)
            code = await process.wait()
            self.processes.pop(slot, None)
            if self.stopping.is_set():
                return
            log.error("HTTP worker %d exited with status %s; starting it again", slot, code)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), RESTART_PAUSE_S)

    async def _start(self, slot: int) -> asyncio.subprocess.Process:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = (self.listener.fileno(), theirs.fileno())
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "serving.worker",
                str(fds[0]),
                str(fds[1]),
                str(slot),
                pass_fds=fds,
            )
        finally:
            theirs.close()
        self.processes[slot] = process
        await self.hub.connect(ours)
        return process
