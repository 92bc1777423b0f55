"""`FakeServer`: the fake Gemini API listening on a local port for as long as an `async with` block lasts."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from batchgen.fakeserver.app import FakeGemini
from batchgen.fakeserver.config import ServerConfig
from batchgen.fakeserver.stats import Stats


class FakeServer:
    """The fake Gemini API on `config.host:config.port` (port 0 picks a free port).

    async with FakeServer(ServerConfig(fail_rate=0.1)) as server:
        ...  # send requests to server.url with server.api_key
        print(server.stats.billed)
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._gemini = FakeGemini(self.config)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<FakeServer {where} {self._gemini.ledger!r}>"

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:43121 (paths start with /v1beta/...)."""
        if self._port is None:
            raise RuntimeError("the server is not running; use it in `async with`")
        host = self.config.host
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def stats(self) -> Stats:
        """A snapshot of the ledger (also served at GET /_fake/stats)."""
        return self._gemini.ledger.snapshot()

    async def __aenter__(self) -> FakeServer:
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        # Cancelling the handler of a request whose client hung up is what stops a slow answer from being
        # written (and billed) after the client has given up; no access log keeps each request cheap.
        runner = web.AppRunner(self._gemini.application(), access_log=None, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
            self._port = _bound_port(runner)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._port = None


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the fake server did not bind a TCP port")
