"""Edge: argv and the environment in; a job run, a printed summary and an exit code out.

Exit codes (for schedulers):
  0    completed
  1    completed, but more of the job's rows (the whole results folder) ended `failed` than
       [limits] max_failed_fraction allows
  2    usage or configuration error (bad job file, flags, schema or input; another run writing the same
       results folder); nothing was sent
  3    stopped by an auth error, a rejected job, a spent daily quota or a write error
  4    stopped by the cost cap
  130  interrupted (SIGINT), 143 terminated (SIGTERM)
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from batchgen import fakeserver
from batchgen.api import LiveRun, RunOptions, RunOutcome, execute, prepare_source
from batchgen.console import logs, progress
from batchgen.errors import BatchgenError, BudgetExhausted, ConfigError, FatalApiError, InputError, OutputError
from batchgen.job import Job, load_job
from batchgen.records import Status
from batchgen.report.breakdown import build_report, load_results, load_runs
from batchgen.report.budget import budget_for
from batchgen.report.estimate import Estimate, EstimateOptions, estimate
from batchgen.report.estimate import render as render_estimate
from batchgen.report.html import write_html
from batchgen.report.pricing import PriceTable
from batchgen.report.text import FORMATS, render, usd
from batchgen.results.sink import record_exit_code
from batchgen.secret import ApiKey

EXIT_OK, EXIT_FAILED_ROWS, EXIT_CONFIG, EXIT_FATAL, EXIT_COST = 0, 1, 2, 3, 4
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

_EXIT_HELP = """exit codes:
  0    completed
  1    completed, but more of the job's rows failed than [limits] max_failed_fraction allows
  2    usage or configuration error, or another run is writing the results folder; nothing was sent
  3    stopped by an auth error, a rejected job, a spent daily quota or a write error (resumable)
  4    stopped by the cost cap (resumable)
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM); rerun to resume
       (rows in flight get [limits] grace_s, default 30 s, to finish; a second Ctrl-C quits at once)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `batchgen` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ConfigError, InputError) as exc:
        print(f"batchgen: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OutputError as exc:
        print(f"batchgen: error: {exc}", file=sys.stderr)
        return EXIT_FATAL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Run large batches of Gemini generateContent calls reliably, fast and cheaply.",
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a job", epilog=_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _job_arguments(run)
    _display_arguments(run)
    run.add_argument("--limit", type=int, metavar="N", help="send at most N rows")
    run.add_argument("--allow-duplicate-ids", action="store_true", help="suffix repeated ids (#2, #3...)")
    run.add_argument(
        "--retry-failed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a rerun, send rows that ended `failed` again (default: yes)",
    )
    run.add_argument("--force", action="store_true", help="write into a results folder made by a different job")
    _local_server_argument(run)
    run.set_defaults(handler=_run)

    guess = commands.add_parser(
        "estimate", help="rows, tokens, cost and duration of a job before paying for it (nothing sent by default)"
    )
    _job_arguments(guess)
    guess.add_argument(
        "--sample",
        type=int,
        default=0,
        metavar="N",
        help="run the first N rows for real (into a temporary folder) to measure output tokens and latency",
    )
    guess.add_argument(
        "--count-tokens",
        type=int,
        nargs="?",
        const=50,
        default=0,
        metavar="N",
        help="scale the local token estimate by :countTokens on N random rows (default N: 50)",
    )
    guess.add_argument("--log-level", choices=logs.LEVELS, default="warning", help="log level (default: warning)")
    _local_server_argument(guess)
    guess.set_defaults(handler=_estimate)

    check = commands.add_parser("check", help="run every start-up check of a job without sending a request")
    _job_arguments(check)
    check.set_defaults(handler=_check)

    report = commands.add_parser("report", help="tokens and cost from one or more results folders")
    report.add_argument("folders", type=Path, nargs="+", metavar="OUT", help="results folder(s)")
    report.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    report.add_argument("--prices", type=Path, metavar="FILE", help="TOML overriding the shipped price table")
    report.add_argument("--html", type=Path, metavar="PATH", help="also write a self-contained HTML page")
    report.set_defaults(handler=_report)

    server = commands.add_parser("fake-server", help="serve the local Gemini server until interrupted")
    fakeserver.add_arguments(server)
    server.set_defaults(handler=fakeserver.serve)
    return parser


def _job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="job file (TOML)")
    parser.add_argument("--input", type=Path, metavar="PATH", help="input file or folder (overrides [input] path)")
    parser.add_argument("--output", type=Path, metavar="DIR", help="results folder (overrides [output] path)")
    parser.add_argument("--base-url", metavar="URL", help="API base URL")
    parser.add_argument("--model", metavar="M", help="model name")
    parser.add_argument("--concurrency", type=int, metavar="N", help="requests in flight at most")
    parser.add_argument("--rpm", type=float, metavar="N", help="requests per minute")
    parser.add_argument("--tpm", type=float, metavar="N", help="input tokens per minute")
    parser.add_argument("--rpd", type=int, metavar="N", help="requests per day")
    parser.add_argument("--max-cost", type=float, metavar="USD", help="cost cap of one run ([limits] max_cost_usd)")
    parser.add_argument("--prices", type=Path, metavar="FILE", help="TOML overriding the shipped price table")


def _display_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress display or progress lines (warnings are still logged)"
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=progress.DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help="without a terminal, log a progress line this often (default: %(default)g)",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default="text",
        help="log lines on stderr: text, or one JSON object per line for schedulers (default: text)",
    )
    parser.add_argument("--log-level", choices=logs.LEVELS, default="info", help="log level (default: info)")


def _local_server_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local-server",
        action="store_true",
        help="run against an in-process local Gemini server (no key needed)",
    )


def load_with_flags(args: argparse.Namespace) -> Job:
    """The job file with command-line flags applied; flag paths are relative to the working folder."""
    job = load_job(args.job)
    top = {k: v for k, v in (("base_url", args.base_url), ("model", args.model)) if v is not None}
    inputs = {"path": args.input.resolve()} if args.input else {}
    outputs = {"path": args.output.resolve()} if args.output else {}
    limits = {
        key: value
        for key, value in (
            ("concurrency", args.concurrency),
            ("requests_per_minute", args.rpm),
            ("tokens_per_minute", args.tpm),
            ("requests_per_day", args.rpd),
            ("max_cost_usd", args.max_cost),
        )
        if value is not None
    }
    if not (top or inputs or outputs or limits):
        return job
    return job.with_overrides(**top, input=inputs, output=outputs, limits=limits)


def api_key(job: Job, environ: dict[str, str] | os._Environ[str] = os.environ) -> ApiKey:
    value = environ.get(job.api_key_env, "").strip()
    if not value:
        raise ConfigError(
            f"environment variable {job.api_key_env} is not set (or use --local-server)",
            file=str(job.file),
            key="api_key_env",
        )
    return ApiKey(value)


def _check(args: argparse.Namespace) -> int:
    job = load_with_flags(args)
    budget = budget_for(job.model, PriceTable.load(args.prices), job.limits.max_cost_usd, job_file=str(job.file))

    async def check_input() -> int:
        _, _, rows = await prepare_source(job, RunOptions())
        return rows

    rows = anyio.run(check_input)
    schema = job.schema_
    print(f"{job.file}: ok: model {job.model}, {rows} input rows, output {job.output.path}")
    if schema is not None:
        print(f"  {schema.dialect.value} from {schema.source or 'the job file'}: ok")
    if budget is not None and budget.cap_usd is not None:
        print(f"  cost cap {usd(budget.cap_usd)} per run, priced as {budget.price.model}: ok")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    table = load_results(args.folders)
    report = build_report(table, PriceTable.load(args.prices), runs=load_runs(args.folders))
    print(render(report, args.format), end="")
    if args.html:
        write_html(args.html, report, table)
        print(f"wrote {args.html}", file=sys.stderr)
    return EXIT_OK


def _estimate(args: argparse.Namespace) -> int:
    job = load_with_flags(args)
    if args.sample < 0 or args.count_tokens < 0:
        raise ConfigError("--sample and --count-tokens take a number of rows >= 0")
    options = EstimateOptions(sample_rows=args.sample, count_tokens_rows=args.count_tokens, prices=args.prices)
    logs.configure("text", args.log_level)
    try:
        if options.needs_api and args.local_server:
            result = anyio.run(_estimate_locally, job, options)
        else:
            result = anyio.run(estimate, job, api_key(job) if options.needs_api else None, options)
    except FatalApiError as exc:
        print(f"batchgen: stopped: {exc}", file=sys.stderr)
        return EXIT_FATAL
    print(render_estimate(result), end="")
    return EXIT_OK


async def _estimate_locally(job: Job, options: EstimateOptions) -> Estimate:
    async with fakeserver.FakeServer(fakeserver.ServerConfig()) as server:
        return await estimate(job.with_overrides(base_url=server.url), ApiKey(server.api_key), options)


def _run(args: argparse.Namespace) -> int:
    job = load_with_flags(args)
    options = RunOptions(
        limit=args.limit,
        allow_duplicate_ids=args.allow_duplicate_ids,
        retry_failed=args.retry_failed,
        force=args.force,
        prices=args.prices,
    )
    key = None if args.local_server else api_key(job)
    logs.configure(args.log_format, args.log_level, secrets=[key] if key else [])
    view = _View(
        mode=None if args.quiet else "live" if sys.stdout.isatty() else "log", interval_s=args.progress_interval
    )
    if view.interval_s <= 0:
        raise ConfigError("--progress-interval must be positive")
    interrupted: list[int] = []
    try:
        with _fewer_collections():
            outcome = anyio.run(_run_async, job, key, options, view, interrupted, **_backend())
    except OutputError:
        _record_exit_code(job, options, EXIT_FATAL)
        raise
    code = _exit_code(job, outcome, interrupted)
    _record_exit_code(job, options, code)
    if outcome is None:  # a second signal cancelled the run outright: nothing more to report
        return code
    logs.run_finished(
        outcome.run_id, outcome.stats, cost_usd=_spent(outcome), stopped_by=outcome.stopped_by, exit_code=code
    )
    _print_summary(outcome, sys.stdout)
    return code


def _record_exit_code(job: Job, options: RunOptions, code: int) -> None:
    try:
        record_exit_code(job.output.path, options.run_id, code)
    except OutputError as exc:  # the results are safe; only the manifest's note of how the run ended is missing
        print(f"batchgen: warning: {exc}", file=sys.stderr)


@dataclass(frozen=True, slots=True)
class _View:
    """How progress is shown: a live display, log lines every `interval_s`, or not at all (None)."""

    mode: progress.Mode | None
    interval_s: float


async def _run_async(
    job: Job, key: ApiKey | None, options: RunOptions, view: _View, interrupted: list[int]
) -> RunOutcome | None:
    """The run, with the signal watcher and the progress display beside it; None when a second signal
    cancelled it outright."""
    runs: list[LiveRun] = []
    showing = anyio.CancelScope()
    outcome: RunOutcome | None = None
    failure: BatchgenError | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_signals, runs, interrupted, group.cancel_scope)

        def started(run: LiveRun) -> None:
            runs.append(run)
            logs.run_started(run.run_id, job, run.runner.stats)
            if view.mode is not None:
                group.start_soon(_show, run, view, showing)

        try:
            outcome = await _execute(job, key, options, started)
        except BatchgenError as exc:
            # Raised below, outside the task group, so that the caller gets it as is, not in an exception group.
            failure = exc
        showing.cancel()  # at once: no progress line may follow the run's end
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return outcome


async def _execute(job: Job, key: ApiKey | None, options: RunOptions, started: Callable[[LiveRun], None]) -> RunOutcome:
    if key is not None:
        return await execute(job, key, options, on_start=started)
    async with fakeserver.FakeServer(fakeserver.ServerConfig()) as server:
        return await execute(job.with_overrides(base_url=server.url), ApiKey(server.api_key), options, on_start=started)


async def _show(run: LiveRun, view: _View, scope: anyio.CancelScope) -> None:
    assert view.mode is not None
    budget = run.budget
    watch = progress.Watch(
        run.runner.stats, run.limiter.snapshot, None if budget is None else (lambda: budget.spent.total)
    )
    with scope:
        await progress.show(progress.Progress(watch), view.mode, interval_s=view.interval_s)


def _spent(outcome: RunOutcome) -> float | None:
    return None if outcome.budget is None else outcome.budget.spent.total


async def _watch_signals(runs: list[LiveRun], interrupted: list[int], everything: anyio.CancelScope) -> None:
    # First signal: stop taking rows and let those in flight finish (bounded by the runner's grace period).
    # Second: cancel at once; the results writer still flushes what it holds, shielded from the cancel.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            interrupted.append(signum)
            if len(interrupted) > 1 or not runs:
                everything.cancel()
                return
            print(
                "\nbatchgen: stopping: finishing rows in flight (interrupt again to quit now)",
                file=sys.stderr,
            )
            runs[0].runner.stop()


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect cycles less often during a run, which allocates many short-lived objects per row, few cyclic.

    With CPython's default thresholds (700, 10, 10) the collector ran every few rows and promoted every object
    that outlived a handful of rows (requests in flight, buffered results), so the full collections that
    followed rescanned them all: a third of a run's CPU time, measured with gc.callbacks on 40k rows at
    concurrency 512 (12.5 s of 34 s). Objects made at start-up (modules, the job) are frozen out of every
    scan; a young generation of 50,000 lets a row's objects die before they are ever scanned. Both are undone
    afterwards, for callers that go on in the same process.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _backend() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"backend_options": {"use_uvloop": True}}


def _exit_code(job: Job, outcome: RunOutcome | None, interrupted: list[int]) -> int:
    if interrupted or outcome is None:
        return EXIT_SIGNAL.get(signal.Signals(interrupted[0]), 130) if interrupted else 130
    if outcome.stopped_by is not None:
        print(f"batchgen: stopped: {outcome.stopped_by}", file=sys.stderr)
        return EXIT_COST if isinstance(outcome.stopped_by, BudgetExhausted) else EXIT_FATAL
    if outcome.failed_fraction > job.limits.max_failed_fraction:
        return EXIT_FAILED_ROWS
    return EXIT_OK


def _print_summary(outcome: RunOutcome, out: TextIO) -> None:
    stats = outcome.stats
    usage = stats.usage
    counts = ", ".join(f"{s.value} {stats.counts[s]}" for s in Status if stats.counts[s])
    resumed = f"; {stats.skipped_rows} already done in earlier runs" if stats.skipped_rows else ""
    print(f"run {outcome.run_id}: {stats.done} rows ({counts or 'none'}){resumed}", file=out)
    print(
        f"tokens: prompt {usage.prompt or 0}, cached {usage.cached or 0}, candidates {usage.candidates or 0}, "
        f"thoughts {usage.thoughts or 0}, tool-use {usage.tool_use or 0}, total {usage.total or 0}",
        file=out,
    )
    print(
        f"requests: {stats.attempts} attempts, {stats.responses} responses, {stats.reasks} re-asks, "
        f"{stats.rate_limited} rate-limited",
        file=out,
    )
    if outcome.budget is not None:
        budget = outcome.budget
        cap = "" if budget.cap_usd is None else f" of a {usd(budget.cap_usd)} cap"
        print(f"cost: {usd(budget.spent.total)}{cap} ({budget.price.model}, as `batchgen report` prices it)", file=out)
    print(f"results: {outcome.output.resolve()}", file=out)
