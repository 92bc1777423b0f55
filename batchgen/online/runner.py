"""Orchestration: bounded fan-out of prompts and each row's lifecycle, from first attempt to final result.

The runner does no I/O of its own. It takes an async iterable of prompts, a `Generate` carrier, a `Limiter`
and a `Sink`, so the same loop serves an online call or a test's plain async function. A row's `Result` is
built by `results.rows`, which the Batch API carrier shares.

A row's life: local checks -> (admission by the limiter -> HTTP attempt) x retries -> verdict -> re-asks while
the output is unusable and re-asks are left -> one `Result`, handed to the sink exactly once.

Stopping (a signal, a fatal error, the cost cap) sends nothing more: a row waiting for admission or for its next
retry is dropped unsent, unwritten (the next run sends it); a request already out gets the grace period, and a
row whose re-ask was not sent keeps the answer it was paid for.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio

from batchgen.errors import (
    ApiError,
    BatchgenError,
    FatalApiError,
    JobRejected,
    RateLimited,
    RequestRejected,
    RetryableError,
    TransportError,
    Unreachable,
)
from batchgen.gemini.request import RequestTemplate
from batchgen.gemini.response import Reply, parse_response
from batchgen.online.retry import Retrier
from batchgen.records import Admission, Generate, Limiter, Prompt, Result, RunStats, Sink, Status
from batchgen.results import rows
from batchgen.results.rows import Tally
from batchgen.results.verdict import REASKABLE, Verdict

Judge = Callable[[Reply], Verdict]
CountTokens = Callable[[bytes], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """How rows are fanned out and when a row or the whole job gives up."""

    concurrency: int = 64
    max_reasks: int = 1
    reask_max_output_tokens: int | None = None
    max_prompt_tokens: int | None = None
    # The same 400 on this many leading rows means the job's request is wrong, not the rows; no connection on
    # this many, that the base URL is wrong or the server down.
    probe_rows: int = 3
    # After stop(), rows in flight get this long to finish before they are cancelled (and resent next run).
    grace_s: float = 30.0


@dataclass(slots=True, eq=False)
class _Waiting:
    """A row between requests: waiting for admission or for its next attempt. `stop()` cancels `scope`
    unless a request is out (`sending`): that one gets the grace period."""

    scope: anyio.CancelScope
    sending: bool = False


class Runner:
    """Runs prompts through a carrier into a sink, concurrently and within limits."""

    def __init__(
        self,
        generate: Generate,
        *,
        template: RequestTemplate,
        limiter: Limiter,
        retrier: Retrier,
        judge: Judge,
        policy: RunPolicy,
        count_tokens: CountTokens | None = None,
        admission: Admission | None = None,
        stats: RunStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._generate = generate
        self._template = template
        self._limiter = limiter
        self._retrier = retrier
        self._judge = judge
        self._policy = policy
        self._count_tokens = count_tokens
        self._admission = admission
        self._clock = clock
        self._reask_template = (
            template.with_generation_config(maxOutputTokens=policy.reask_max_output_tokens)
            if policy.reask_max_output_tokens
            else template
        )
        # What each row is labelled as sent by: the service tier its requests ask for.
        self._traffic = template.service_tier
        self._stopping = anyio.Event()
        self._waiting: set[_Waiting] = set()
        self._everything: anyio.CancelScope | None = None
        self._aborted = False
        self.stats = RunStats() if stats is None else stats
        self.stopped_by: BatchgenError | None = None

    def __repr__(self) -> str:
        return f"Runner(done={self.stats.done}, in_flight={self.stats.in_flight}, stopping={self.stopping})"

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, reason: BatchgenError | None = None) -> None:
        """Send nothing more: rows waiting for admission or a retry are dropped unsent (the next run sends
        them); requests already out get `grace_s` to finish. Safe to call more than once."""
        if reason is not None and self.stopped_by is None:
            self.stopped_by = reason
        self._stopping.set()
        for row in self._waiting:
            if not row.sending:
                row.scope.cancel()

    def abort(self, reason: BatchgenError | None = None) -> None:
        """Stop, and cancel the requests still out at once instead of after the grace period; `run` still
        returns, so what was received is written."""
        self.stop(reason)
        self._aborted = True
        if self._everything is not None:
            self._everything.cancel()

    async def run(self, prompts: AsyncIterable[Prompt], sink: Sink) -> RunStats:
        """Process every prompt (until stopped); a fatal API error stops the run and is kept in `stopped_by`."""
        rows = aiter(prompts)
        try:
            async with anyio.create_task_group() as group:
                self._everything = group.cancel_scope
                if self._aborted:
                    group.cancel_scope.cancel()
                # Watches the probe too: a stop while the first request is out is bounded by the same grace.
                group.start_soon(self._enforce_stop, group.cancel_scope)
                held = await self._probe(rows, sink)
                if held is not None:
                    await self._fan_out(_chained(held, rows) if held else rows, sink)
                group.cancel_scope.cancel()  # every row is done: dismiss the stop watcher
        except FatalApiError as exc:
            self.stop(exc)
        except BaseExceptionGroup as group:
            fatal, rest = group.split(BatchgenError)
            if rest is not None:
                raise
            assert fatal is not None
            self.stop(_first_leaf(fatal))
        return self.stats

    async def _probe(self, rows: AsyncIterator[Prompt], sink: Sink) -> list[Prompt] | None:
        """Send the first rows one at a time until one shows the job can work; the rows to send before the
        rest (held back by a failed connection), or None when there is nothing more to send.

        An auth failure, an unknown model, a request shape the API rejects or an address nothing answers at
        then costs a handful of requests instead of one failure (or six connection attempts) per row. A probe
        row that could not connect is tried once, not retried; it goes out again with the others.
        """
        rejections: list[str] = []
        held: list[Prompt] = []
        refused: ApiError | None = None
        reached = False  # some request got an answer from the server (a 400 is one)
        while not self._refused():
            prompt = await anext(rows, None)
            if self.stopping:
                return None
            if prompt is None:
                if refused is not None and not reached:
                    raise _unreachable(len(held), refused)
                return held or None
            result, error = await self._process(prompt, probing=True)
            if result is None:
                if error is None:
                    return None  # stopped before it was sent
                held.append(prompt)
                refused = error
                if len(held) >= self._policy.probe_rows:
                    if not reached:
                        raise _unreachable(len(held), refused)
                    return held  # the server answered before: these go out again, with retries
                continue
            await self._emit(result, sink)
            if prompt.problem is not None:
                continue
            reached = True
            if not isinstance(error, RequestRejected):
                return held
            if error.http_status == 404:
                raise JobRejected(f"{error} (is the model name right?)", http_status=404)
            rejections.append(str(error))
            if len(set(rejections)) > 1:
                return held
            if len(rejections) >= self._policy.probe_rows:
                raise JobRejected(f"the first {len(rejections)} requests were all rejected: {error}")
        return None

    async def _fan_out(self, rows: AsyncIterator[Prompt], sink: Sink) -> None:
        source = _Shared(rows)
        async with anyio.create_task_group() as workers:
            for _ in range(self._policy.concurrency):
                workers.start_soon(self._work, source, sink)

    async def _enforce_stop(self, everything: anyio.CancelScope) -> None:
        await self._stopping.wait()
        await anyio.sleep(self._policy.grace_s)
        everything.cancel()  # rows still in flight are not written, so the next run sends them again

    async def _work(self, source: _Shared, sink: Sink) -> None:
        while not self._refused():
            prompt = await source.next()
            if prompt is None or self.stopping:
                return  # a row taken after stop() was never sent: the next run sends it
            try:
                result, _ = await self._process(prompt)
            except FatalApiError as exc:
                # Stop rather than cancel: the other rows in flight may already be answered and billed,
                # so they get the grace period to finish and be written. This row is sent again next run.
                self.stop(exc)
                return
            if result is None:
                return  # stopped before it was sent: the next run sends it
            await self._emit(result, sink)

    def _refused(self) -> bool:
        """Whether no more rows may be taken: the run is stopping, or admission says so (and stops it)."""
        if self.stopping:
            return True
        refusal = None if self._admission is None else self._admission.refusal(self.stats.in_flight)
        if refusal is not None:
            self.stop(refusal)
        return refusal is not None

    async def _emit(self, result: Result, sink: Sink) -> None:
        # Written first: a paid-for row is kept whatever admission decides next.
        await sink.write(result)
        self.stats.record(result)
        if self._admission is not None:
            self._admission.charge(result)
        if result.status is not Status.OK:
            rows.log_problem(result)

    async def _process(self, prompt: Prompt, *, probing: bool = False) -> tuple[Result | None, ApiError | None]:
        """One row from prompt to final result; the error is the API error that ended it, if any.

        No result (None) when the row was not answered and must not be written: the run stopped before it was
        sent, or (`probing`) its one attempt could not connect; the error is then that connection error.
        """
        if prompt.problem is not None:
            return rows.unsendable(prompt, prompt.problem), None
        estimate = self._template.estimate_tokens(prompt.contents)
        if self._policy.max_prompt_tokens and estimate > self._policy.max_prompt_tokens:
            problem = f"prompt is about {estimate} tokens, over max_prompt_tokens={self._policy.max_prompt_tokens}"
            return rows.unsendable(prompt, problem), None
        tally = Tally()
        template = self._template
        answered: tuple[Reply, Verdict] | None = None
        self.stats.in_flight += 1
        try:
            while True:
                body = template.render(prompt.contents)
                try:
                    reply = await self._send(body, estimate, tally, probing)
                except (RequestRejected, _Exhausted) as exc:
                    error = exc.error if isinstance(exc, _Exhausted) else exc
                    return self._failed(prompt, tally, error), error
                except _Unsent as exc:
                    if answered is None:
                        return None, exc.error
                    # The re-ask was never sent: the row keeps the answer it paid for.
                    tally.reasks -= 1
                    return self._answered(prompt, tally, *answered), None
                verdict = self._judge(reply)
                if verdict.status in REASKABLE and tally.reasks < self._policy.max_reasks:
                    tally.reasks += 1
                    answered = (reply, verdict)
                    if verdict.status is Status.TRUNCATED:
                        template = self._reask_template
                    continue
                return self._answered(prompt, tally, reply, verdict), None
        finally:
            self.stats.in_flight -= 1

    async def _send(self, body: bytes, estimate: int, tally: Tally, probing: bool) -> Reply:
        """One request through admission and retries; raises `_Unsent` when the run stops first."""
        if self.stopping:
            raise _Unsent()
        if self._count_tokens is not None:
            estimate = await self._exact_tokens(body, estimate)
        # Cancelled by stop() while the row waits (admission, a retry's backoff), never while a request is out.
        row = _Waiting(anyio.CancelScope())

        async def attempt(number: int) -> Reply:
            await self._limiter.acquire(estimate)
            if self.stopping:
                raise _Unsent()  # admitted as the stop came: still not sent
            tally.sent(self._clock())
            self.stats.sent()
            row.sending = True
            try:
                data = await self._generate(body)
            except RetryableError as exc:
                if isinstance(exc, RateLimited):
                    # The tripped attempt keeps its token charge: the server may have counted it.
                    self.stats.rate_limited += 1
                    self._limiter.rate_limited(exc.quota_id, exc.retry_after)
                if probing and isinstance(exc, TransportError) and exc.connect:
                    raise _Unsent(exc) from exc
                if self.stopping:
                    raise _Unsent() from exc  # a retry would be a new request
                raise
            finally:
                row.sending = False
            reply = parse_response(data)
            self._limiter.settle(estimate, reply.usage.prompt)
            tally.answered(reply.usage)
            self.stats.answered(reply.usage)
            return reply

        with row.scope:
            self._waiting.add(row)
            try:
                return await self._retrier.call(attempt)
            except (RequestRejected, FatalApiError, _Unsent):
                raise
            except ApiError as exc:  # a retryable error that ran out of attempts
                raise _Exhausted(exc) from exc
            finally:
                self._waiting.discard(row)
        raise _Unsent()  # stop() cancelled the wait

    async def _exact_tokens(self, body: bytes, fallback: int) -> int:
        assert self._count_tokens is not None
        try:
            return await self._count_tokens(body)
        except ApiError:
            return fallback  # an estimate is good enough to pace by; the response corrects it

    def _answered(self, prompt: Prompt, tally: Tally, reply: Reply, verdict: Verdict) -> Result:
        return rows.answered(prompt, tally, reply, verdict, now=self._clock(), traffic=self._traffic)

    def _failed(self, prompt: Prompt, tally: Tally, error: ApiError) -> Result:
        return rows.failed(prompt, tally, error, now=self._clock(), traffic=self._traffic)


class _Shared:
    """The prompt source the workers share: each takes the next row itself, one at a time, in input order.

    Workers pull instead of being fed through a queue: a hand-off through a memory stream cost a feeder task
    wake-up, an event and a checkpoint per row. The source (the reader) already buffers a bounded batch, so
    nothing is lost; the lock only keeps two workers from advancing the async iterator at once.
    """

    def __init__(self, rows: AsyncIterator[Prompt]) -> None:
        self._rows = rows
        # fast_acquire: an uncontended lock is taken without yielding to the event loop.
        self._lock = anyio.Lock(fast_acquire=True)

    async def next(self) -> Prompt | None:
        async with self._lock:
            return await anext(self._rows, None)


def _unreachable(requests: int, error: ApiError) -> Unreachable:
    return Unreachable(
        f"no connection on any of the first {requests} request(s): {error} (is base_url right, and the server up?)"
    )


async def _chained(first: list[Prompt], rest: AsyncIterator[Prompt]) -> AsyncIterator[Prompt]:
    for prompt in first:
        yield prompt
    async for prompt in rest:
        yield prompt


class _Unsent(Exception):
    """The row was not answered and is not written (the next run sends it): the run stopped before its next
    request, or (`error`) a probe row could not connect. Internal to the runner."""

    def __init__(self, error: ApiError | None = None) -> None:
        super().__init__(str(error or "stopped before sending"))
        self.error = error


class _Exhausted(Exception):
    """A retryable error that outlived its attempts; internal to the runner."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


def _first_leaf(group: BaseExceptionGroup[BatchgenError]) -> BatchgenError:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, BatchgenError)
    return error
