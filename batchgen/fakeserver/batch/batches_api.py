"""The Batch API routes: create, get, list, cancel and delete (paths as the SDK's `batches.py` builds them).

    POST   /v1beta/models/{model}:batchGenerateContent   the new job's operation (PENDING)
    GET    /v1beta/batches/{id}                          the job's operation
    GET    /v1beta/batches?pageSize=&pageToken=          {"operations": [...], "nextPageToken"}; {} when empty
    POST   /v1beta/batches/{id}:cancel                   {}; the job is CANCELLED at once
    DELETE /v1beta/batches/{id}                          {}; the job stops and is forgotten (its results file stays)

Listing is newest first (the cookbook's listing) under `operations` (the SDK's `_ListBatchJobsResponse_from_mldev`
reads that key). An unknown job is 404 NOT_FOUND; a create over the limit of jobs PENDING or RUNNING at once is
refused with BatchConfig.limit_status.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from aiohttp import web

from batchgen.fakeserver import errors
from batchgen.fakeserver.batch.answers import Context
from batchgen.fakeserver.batch.files import FileStore
from batchgen.fakeserver.batch.http import Routes, json_response
from batchgen.fakeserver.batch.jobs import BATCH_ID_LENGTH, BatchJob
from batchgen.fakeserver.batch.lines import INLINE_LIMIT, parse_create, payload_too_large
from batchgen.fakeserver.batch.resources import Clock, PageRequest, failed_precondition, new_id, not_found, page
from batchgen.fakeserver.batch.runner import Runner, Timeline
from batchgen.fakeserver.config import ServerConfig
from batchgen.fakeserver.faults import FaultPlanner
from batchgen.fakeserver.request import load_body
from batchgen.fakeserver.schema import SchemaCache
from batchgen.fakeserver.stats import Ledger


class BatchesApi:
    """The jobs of one server and the routes that manage them."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        ledger: Ledger,
        files: FileStore,
        faults: FaultPlanner,
        schemas: SchemaCache,
        routes: Routes,
        serves: Callable[[str], bool],
        rng: random.Random,
        clock: Clock,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._files = files
        self._faults = faults
        self._schemas = schemas
        self._routes = routes
        self._serves = serves
        self._rng = rng
        self._clock = clock
        self._runners: dict[str, Runner] = {}
        self._created = 0

    def __repr__(self) -> str:
        active = sum(runner.job.active for runner in self._runners.values())
        return f"<BatchesApi jobs={len(self._runners)} active={active}>"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        counted = self._routes.counted
        router.add_post("/v1beta/models/{model}:batchGenerateContent", counted("batchGenerateContent", self.create))
        router.add_get("/v1beta/batches", counted("batches.list", self.list))
        router.add_get("/v1beta/batches/{batch:[^/:]+}", counted("batches.get", self.get))
        router.add_post("/v1beta/batches/{batch:[^/:]+}:cancel", counted("batches.cancel", self.cancel))
        router.add_delete("/v1beta/batches/{batch:[^/:]+}", counted("batches.delete", self.delete))

    async def close(self) -> None:
        """Stop every job's task (the server is shutting down)."""
        for runner in self._runners.values():
            await runner.close()

    async def create(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if not self._serves(model):
            raise errors.model_not_found(model, "batchGenerateContent")
        body = await request.read()
        if len(body) > INLINE_LIMIT:
            raise payload_too_large()
        spec = parse_create(load_body(body), self._files)
        if sum(runner.job.active for runner in self._runners.values()) >= self._config.batch.max_concurrent:
            raise self._over_limit()
        self._created += 1
        now = self._clock()
        job = BatchJob(self._fresh_id(), self._created, model, spec, now, now)
        runner = Runner(
            job,
            self._context(job),
            Timeline.draw(self._config.batch, random.Random(f"{self._config.seed}:{job.number}"), spec.directive),
            config=self._config.batch,
            files=self._files,
            ledger=self._ledger.batch,
            clock=self._clock,
        )
        self._runners[job.batch_id] = runner
        self._ledger.batch.created += 1
        runner.start()
        return json_response(job.to_json())

    async def get(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._runner(request).job.to_json())

    async def list(self, request: web.Request) -> web.StreamResponse:
        jobs = [runner.job for runner in self._runners.values()]
        chosen, token = page(jobs, lambda job: job.number, PageRequest.from_query(request.query))
        body: dict[str, object] = {}
        if chosen:
            body["operations"] = [job.to_json() for job in chosen]
        if token:
            body["nextPageToken"] = token
        return json_response(body)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        self._runner(request).cancel()
        self._ledger.batch.cancelled += 1
        return json_response({})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        runner = self._runner(request)
        await runner.close()
        del self._runners[runner.job.batch_id]
        self._ledger.batch.deleted[runner.job.state] += 1
        return json_response({})

    def _runner(self, request: web.Request) -> Runner:
        runner = self._runners.get(request.match_info["batch"])
        if runner is None:
            raise not_found()
        return runner

    def _context(self, job: BatchJob) -> Context:
        return Context(
            config=self._config.batch,
            seed=self._config.seed,
            faults=self._faults,
            schemas=self._schemas,
            ledger=self._ledger,
            model=job.model,
            job_number=job.number,
            inline=job.spec.inline,
        )

    def _over_limit(self) -> errors.RpcError:
        limit = self._config.batch.max_concurrent
        if self._config.batch.limit_status == 400:
            return failed_precondition(f"Too many batch jobs: at most {limit} may be pending or running at once.")
        # The live answer to a batch create over quota (langchain4j PR #3942): this message, a Help link.
        return errors.RpcError(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. For more information "
            f"on this error, head to: {errors.RATE_LIMIT_DOCS}. To monitor your current usage, head to: "
            "https://ai.dev/rate-limit. ",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [{"description": "Learn more about Gemini API quotas", "url": errors.RATE_LIMIT_DOCS}],
                }
            ],
        )

    def _fresh_id(self) -> str:
        while True:
            batch_id = new_id(self._rng, BATCH_ID_LENGTH)
            if batch_id not in self._runners:
                return batch_id
