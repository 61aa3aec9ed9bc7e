"""uvicorn's server for the web process, told how to end the app's endless responses.

On SIGTERM (or SIGINT) uvicorn stops accepting connections, then waits for the responses in
flight to end before it exits; an event stream (``GET /api/v1/jobs/ID/events``) ends only when
its job does, so a server with a dashboard open would wait for it (for over a minute in a trial,
until uvicorn's own limit). :class:`ShutdownServer` sets the app's ``state.stopping`` event as
soon as it is told to shut down: every event stream then closes within half a second (the
client reconnects after its ``retry``), and uvicorn's ``timeout_graceful_shutdown`` bounds what
remains (an upload in flight).
"""

from __future__ import annotations

import threading
from types import FrameType

import uvicorn


class ShutdownServer(uvicorn.Server):
    """A uvicorn server that sets ``stopping`` when it is told to shut down."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)
