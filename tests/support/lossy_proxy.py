"""A TCP proxy on loopback that can lose one exchange: the next request is forwarded and run by the server but its
reply never reaches the client (`lose_reply`), or the request itself never reaches the server (`lose_request`);
either way the client's connection is then closed, as when a network or a hung server drops it mid-call."""

from __future__ import annotations

import asyncio
import contextlib


class LossyProxy:
    """`await start()`, point the client at `url(...)`, arm `lose_reply()` / `lose_request()` before a call."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._mode: str | None = None
        self.lost = 0  # exchanges lost so far
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def lose_reply(self) -> None:
        self._mode = "reply"

    def lose_request(self) -> None:
        self._mode = "request"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        done = asyncio.Event()

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                if self._mode == "request":
                    self._mode = None
                    self.lost += 1
                    break  # never forwarded
                up_writer.write(data)
                await up_writer.drain()
            done.set()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                if self._mode == "reply":
                    self._mode = None
                    self.lost += 1
                    # The server replies once it ran what it had read: let it finish the rest of the batch.
                    await asyncio.sleep(0.1)
                    break  # never delivered
                writer.write(data)
                await writer.drain()
            done.set()

        tasks = [asyncio.create_task(client_to_server()), asyncio.create_task(server_to_client())]
        self._tasks.update(tasks)
        try:
            await done.wait()
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await w.wait_closed()
