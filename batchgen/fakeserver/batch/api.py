"""The fake Files API (and the Batch API to come) wired together: the one object the app builds and installs."""

from __future__ import annotations

import random
import time

from aiohttp import web

from batchgen.fakeserver.batch.files import FileStore
from batchgen.fakeserver.batch.files_api import FilesApi
from batchgen.fakeserver.batch.http import Authenticate, Routes
from batchgen.fakeserver.batch.resources import Clock
from batchgen.fakeserver.batch.upload import Uploads
from batchgen.fakeserver.config import ServerConfig
from batchgen.fakeserver.stats import Ledger


class BatchApis:
    """The file store and the upload sessions of one server, with their routes.

    `authenticate` is the model routes' own key check, so every endpoint refuses a bad key alike.
    """

    def __init__(
        self, config: ServerConfig, ledger: Ledger, authenticate: Authenticate, clock: Clock = time.time_ns
    ) -> None:
        # Ids are drawn from the seed, so a run's resource names replay.
        ids = random.Random(config.seed)
        self.files = FileStore(config.files, ids, clock)
        routes = Routes(ledger, authenticate)
        self._files_api = FilesApi(
            config.files, self.files, Uploads(config.files, self.files, ids), ledger.batch, routes
        )

    def __repr__(self) -> str:
        return f"<BatchApis {self.files!r}>"

    def install(self, app: web.Application) -> None:
        """Add the routes."""
        self._files_api.add_routes(app.router)
