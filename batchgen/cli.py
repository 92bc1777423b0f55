"""Edge: argv and the environment in; a job run, a printed summary and an exit code out.

Exit codes (for schedulers):
  0    completed
  1    completed, but more rows ended `failed` than [limits] max_failed_fraction allows
  2    usage or configuration error (bad job file, flags, schema or input); nothing was sent
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
from pathlib import Path
from typing import Any, TextIO

import anyio

from batchgen import fakeserver
from batchgen.errors import BatchgenError, ConfigError, InputError, OutputError
from batchgen.execute import RunOptions, RunOutcome, execute, prepare_source
from batchgen.job import Job, load_job
from batchgen.pricing import PriceTable
from batchgen.records import Status
from batchgen.report import build_report, load_results, load_runs
from batchgen.report_format import FORMATS, render
from batchgen.report_html import write_html
from batchgen.runner import Runner
from batchgen.secret import ApiKey

EXIT_OK, EXIT_FAILED_ROWS, EXIT_CONFIG, EXIT_FATAL, EXIT_COST = 0, 1, 2, 3, 4
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

_EXIT_HELP = """exit codes:
  0    completed
  1    completed, but more rows failed than [limits] max_failed_fraction allows
  2    usage or configuration error; nothing was sent
  3    stopped by an auth error, a rejected job, a spent daily quota or a write error (resumable)
  4    stopped by the cost cap (resumable)
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM); rerun to resume
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
    run.add_argument("--limit", type=int, metavar="N", help="send at most N rows")
    run.add_argument("--allow-duplicate-ids", action="store_true", help="suffix repeated ids (#2, #3...)")
    run.add_argument(
        "--retry-failed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a rerun, send rows that ended `failed` again (default: yes)",
    )
    run.add_argument("--force", action="store_true", help="write into a results folder made by a different job")
    run.add_argument(
        "--local-server",
        action="store_true",
        help="run against an in-process local Gemini server (no key needed)",
    )
    run.set_defaults(handler=_run)

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

    async def check_input() -> int:
        _, _, rows = await prepare_source(job, RunOptions())
        return rows

    rows = anyio.run(check_input)
    schema = job.schema_
    print(f"{job.file}: ok: model {job.model}, {rows} input rows, output {job.output.path}")
    if schema is not None:
        print(f"  {schema.dialect.value} from {schema.source or 'the job file'}: ok")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    table = load_results(args.folders)
    report = build_report(table, PriceTable.load(args.prices), runs=load_runs(args.folders))
    print(render(report, args.format), end="")
    if args.html:
        write_html(args.html, report, table)
        print(f"wrote {args.html}", file=sys.stderr)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    job = load_with_flags(args)
    options = RunOptions(
        limit=args.limit,
        allow_duplicate_ids=args.allow_duplicate_ids,
        retry_failed=args.retry_failed,
        force=args.force,
    )
    interrupted: list[int] = []
    with _fewer_collections():
        outcome = anyio.run(_run_async, job, options, args.local_server, interrupted, **_backend())
    if outcome is not None:
        _print_summary(outcome, sys.stdout)
    return _exit_code(job, outcome, interrupted)


async def _run_async(job: Job, options: RunOptions, local: bool, interrupted: list[int]) -> RunOutcome | None:
    try:
        return await _run_watched(job, options, local, interrupted)
    except BaseExceptionGroup as group:
        # Task groups wrap whatever ends them; a configuration or input error is reported like any other.
        errors, _ = group.split(BatchgenError)
        if errors is None:
            raise
        leaf: BaseException = errors
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None


async def _run_watched(job: Job, options: RunOptions, local: bool, interrupted: list[int]) -> RunOutcome | None:
    outcome: RunOutcome | None = None  # stays None when a second signal cancels the run outright
    async with anyio.create_task_group() as group:
        runners: list[Runner] = []
        group.start_soon(_watch_signals, runners, interrupted, group.cancel_scope)
        if local:
            async with fakeserver.FakeServer(fakeserver.ServerConfig()) as server:
                local_job = job.with_overrides(base_url=server.url)
                outcome = await execute(local_job, ApiKey(server.api_key), options, on_start=runners.append)
        else:
            outcome = await execute(job, api_key(job), options, on_start=runners.append)
        group.cancel_scope.cancel()
    return outcome


async def _watch_signals(runners: list[Runner], interrupted: list[int], everything: anyio.CancelScope) -> None:
    # First signal: stop taking rows and let those in flight finish (bounded by the runner's grace period).
    # Second: cancel at once; the results writer still flushes what it holds, shielded from the cancel.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            interrupted.append(signum)
            if len(interrupted) > 1 or not runners:
                everything.cancel()
                return
            print(
                "\nbatchgen: stopping: finishing rows in flight (interrupt again to quit now)",
                file=sys.stderr,
            )
            runners[0].stop()


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
        return EXIT_FATAL
    if outcome.stats.failed_fraction() > job.limits.max_failed_fraction:
        return EXIT_FAILED_ROWS
    return EXIT_OK


def _print_summary(outcome: RunOutcome, out: TextIO) -> None:
    stats = outcome.stats
    usage = stats.usage
    counts = ", ".join(f"{s.value} {stats.counts[s]}" for s in Status if stats.counts[s])
    print(f"run {outcome.run_id}: {stats.done} rows ({counts or 'none'})", file=out)
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
    print(f"results: {outcome.output}", file=out)
