"""The cluster's shared quota without a cluster: the authority and a worker's link to it, on one event loop.

`Authority` is what the Ray actor runs and `Link` what each worker runs; here the link reaches the authority
directly (it satisfies the link's `Channel`), so the batching, the 429 path, the stop and the cluster-wide
cost cap are checked in milliseconds. The same code over Ray is tested in test_ray.py.
"""

from __future__ import annotations

import asyncio
import pickle

import pytest

from batchgen.distributed.authority import Authority, Report, Stop, WorkerState
from batchgen.distributed.done import DoneIds
from batchgen.distributed.link import Link
from batchgen.errors import BatchgenError, BudgetExhausted, ExitCode, Interrupted, QuotaExhausted, exit_code_for
from batchgen.online.limiter.rate import Limits
from batchgen.records import Result, RunStats, Status, Usage
from batchgen.report.budget import Budget
from batchgen.report.pricing import PriceTable

pytestmark = pytest.mark.anyio


def link(authority: Authority, name: str = "w1", *, budget: Budget | None = None) -> tuple[Link, list[BatchgenError]]:
    stops: list[BatchgenError] = []
    return Link(authority, name, RunStats(), budget, stops.append, report_s=0.01), stops


async def test_an_unlimited_authority_grants_every_permit_asked_for_in_one_call() -> None:
    """With no quota configured, one call admits everything the worker has waiting."""
    authority = Authority(Limits())
    grant = await authority.acquire([10] * 50)
    assert grant.count == 50 and grant.stop is None
    assert (await authority.status()).limiter.admitted == 50


async def test_a_paced_authority_grants_what_comes_within_the_linger_and_no_more() -> None:
    """At 600 RPM (a request every 0.1 s) a call waits for its first permit and returns without waiting a
    second one out: pacing is kept to within the linger (10 ms)."""
    authority = Authority(Limits(requests_per_minute=600, headroom=0.0))
    first = await authority.acquire([1] * 5)
    second = await authority.acquire([1] * 5)
    assert first.count >= 1 and second.count == 1


async def test_a_spent_daily_quota_stops_the_cluster_with_quota_exhausted() -> None:
    """Past `requests_per_day` the authority grants nothing more and every later answer carries the stop."""
    authority = Authority(Limits(requests_per_day=3))
    grant = await authority.acquire([1] * 5)
    assert grant.count == 3
    assert grant.stop is not None and grant.stop.kind == "QuotaExhausted"
    reply = await authority.report(Report(WorkerState("w2")))
    assert reply.stop == grant.stop


def test_a_stop_crosses_a_process_boundary_with_its_class_message_and_exit_code() -> None:
    """batchgen's errors take keyword arguments, which pickle does not restore; a `Stop` does, so the driver
    ends with the worker's error and its exit code."""
    cap = BudgetExhausted(cap_usd=1.0, spent_usd=0.9, projected_usd=1.1)
    for error in (cap, Interrupted(2), QuotaExhausted("spent", quota_id="rpd")):
        revived = pickle.loads(pickle.dumps(Stop.of(error))).error()
        assert type(revived) is type(error)
        assert str(revived) == str(error)
        assert exit_code_for(revived) == exit_code_for(error)
    assert exit_code_for(Stop.of(cap).error()) == ExitCode.COST


async def test_a_link_admits_its_waiting_requests_through_batched_calls() -> None:
    """Forty requests waiting at once in one worker cost a handful of calls to the authority, not forty."""
    authority = Authority(Limits())
    worker, _ = link(authority)
    async with asyncio.TaskGroup() as group:
        running = group.create_task(worker.run())
        await asyncio.gather(*(worker.acquire(10) for _ in range(40)))
        running.cancel()
    status = await authority.status()
    assert status.limiter.admitted == 40
    assert status.calls < 20


async def test_a_429_reported_by_one_worker_cools_every_worker_down() -> None:
    """A worker's 429 reaches the shared limiter at once: the cooldown holds the next permit of another
    worker, as one process's limiter would hold its own."""
    authority = Authority(Limits(default_cooldown=0.3))
    first, _ = link(authority, "w1")
    second, _ = link(authority, "w2")
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(first.run()), group.create_task(second.run())]
        await first.acquire(1)
        first.rate_limited("GenerateRequestsPerMinutePerProjectPerModel", None)
        await asyncio.sleep(0.05)
        assert (await authority.status()).limiter.state == "backing off after 429"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await second.acquire(1)
        assert loop.time() - started >= 0.2
        for task in tasks:
            task.cancel()


async def test_the_cost_cap_counts_the_whole_clusters_spend_and_stops_every_worker() -> None:
    """Two workers each spend under the cap, together over it: the next row either would take is refused
    with BudgetExhausted, and the other worker learns the stop from its next report."""
    price = PriceTable.load(None).price_for("gemini-2.5-flash")
    row = Result("r", Status.OK, usage=Usage(prompt=100_000, candidates=10_000, total=110_000), responses=1)
    cost = price.cost(row.usage, 1).total
    authority = Authority(Limits())
    first, first_stops = link(authority, "w1", budget=Budget(price, cap_usd=cost * 3.5))
    second, second_stops = link(authority, "w2", budget=Budget(price, cap_usd=cost * 3.5))
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(first.run()), group.create_task(second.run())]
        for _ in range(2):
            first.charge(row)
            second.charge(row)
        assert first.refusal(0) is None  # it has spent 2 rows; the other worker's spend is not known yet
        await asyncio.sleep(0.1)
        refusal = first.refusal(0)
        assert isinstance(refusal, BudgetExhausted)
        await asyncio.sleep(0.1)
        assert isinstance(second.refusal(0), BudgetExhausted)
        assert [type(e) for e in first_stops + second_stops] == [BudgetExhausted, BudgetExhausted]
        for task in tasks:
            task.cancel()


def test_done_ids_are_found_by_value_in_any_process() -> None:
    """The ids a rerun skips, by digest: every member is found, others are not, and a pickled copy (what a
    worker receives) answers the same."""
    members = [f"id-{i}" for i in range(1000)] + ["", "ü", "a\x00"]
    done = pickle.loads(pickle.dumps(DoneIds([members[:500], members[500:]])))
    assert len(done) == len(members)
    assert all(member in done for member in members)
    assert not any(other in done for other in ("id-1000", "id--1", "a", None, 3))
    assert "x" not in DoneIds()
