"""The fake Files and Batch APIs wired together: the one object the app builds and installs."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from aiohttp import web

from batchgen.fakeserver.batch.batches_api import BatchesApi
from batchgen.fakeserver.batch.files import FileStore
from batchgen.fakeserver.batch.files_api import FilesApi
from batchgen.fakeserver.batch.http import Authenticate, Routes
from batchgen.fakeserver.batch.resources import Clock
from batchgen.fakeserver.batch.upload import Uploads
from batchgen.fakeserver.config import ServerConfig
from batchgen.fakeserver.faults import FaultPlanner
from batchgen.fakeserver.schema import SchemaCache
from batchgen.fakeserver.stats import Ledger


class BatchApis:
    """The file store, the upload sessions and the batch jobs of one server, with their routes.

    `authenticate` and `serves` are the model routes' own key and model checks, so every endpoint refuses a
    bad key or an unknown model alike.
    """

    def __init__(
        self,
        config: ServerConfig,
        ledger: Ledger,
        faults: FaultPlanner,
        schemas: SchemaCache,
        authenticate: Authenticate,
        serves: Callable[[str], bool],
        clock: Clock = time.time_ns,
    ) -> None:
        # Ids are drawn from the seed, so a run's resource names replay.
        ids = random.Random(config.seed)
        self.files = FileStore(config.files, ids, clock)
        routes = Routes(ledger, authenticate)
        self._files_api = FilesApi(
            config.files, self.files, Uploads(config.files, self.files, ids), ledger.batch, routes
        )
        self._batches_api = BatchesApi(
            config,
            ledger=ledger,
            files=self.files,
            faults=faults,
            schemas=schemas,
            routes=routes,
            serves=serves,
            rng=ids,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"<BatchApis {self.files!r} {self._batches_api!r}>"

    def install(self, app: web.Application) -> None:
        """Add the routes, and stop running jobs when the app is cleaned up."""
        self._files_api.add_routes(app.router)
        self._batches_api.add_routes(app.router)
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        await self._batches_api.close()
