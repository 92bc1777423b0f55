"""Edge: argv in; a job run (through `batchgen.api`), a printed summary and an exit code out.

Exit codes for schedulers are `errors.ExitCode`; `batchgen --help` lists them.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from batchgen import api, fakeserver
from batchgen.console import logs, progress
from batchgen.console.format import usd
from batchgen.errors import (
    BatchgenError,
    ConfigError,
    ExitCode,
    FatalApiError,
    InputError,
    Interrupted,
    OutputError,
)
from batchgen.job import Job
from batchgen.pipeline import LiveRun, RunSummary, run_blocking
from batchgen.records import Status
from batchgen.report.breakdown import build_report, load_results, load_runs
from batchgen.report.estimate import render as render_estimate
from batchgen.report.html import write_html
from batchgen.report.pricing import PriceTable
from batchgen.report.text import FORMATS, render
from batchgen.secret import ApiKey

_EXIT_HELP = """exit codes:
  0    completed
  1    completed, but no row of the job is ok, or more of its rows failed than [limits]
       max_failed_fraction allows (default 0.1)
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
        return ExitCode.CONFIG
    except OutputError as exc:
        print(f"batchgen: error: {exc}", file=sys.stderr)
        return ExitCode.FATAL


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


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The job keys the command line's flags replace (paths relative to the working folder, as given)."""
    top = {k: v for k, v in (("base_url", args.base_url), ("model", args.model)) if v is not None}
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
    sections = {
        "input": {"path": args.input} if args.input else {},
        "output": {"path": args.output} if args.output else {},
        "limits": limits,
    }
    return top | {name: entries for name, entries in sections.items() if entries}


def _check(args: argparse.Namespace) -> int:
    checked = api.check_job(args.job, prices=args.prices, **flag_overrides(args))
    job, budget = checked.job, checked.budget
    schema = job.schema_
    print(f"{job.file}: ok: model {job.model}, {checked.rows} input rows, output {job.output.path}")
    if schema is not None:
        print(f"  {schema.dialect.value} from {schema.source or 'the job file'}: ok")
    if budget is not None and budget.cap_usd is not None:
        print(f"  cost cap {usd(budget.cap_usd)} per run, priced as {budget.price.model}: ok")
    return ExitCode.OK


def _report(args: argparse.Namespace) -> int:
    table = load_results(args.folders)
    report = build_report(table, PriceTable.load(args.prices), runs=load_runs(args.folders))
    print(render(report, args.format), end="")
    if args.html:
        write_html(args.html, report, table)
        print(f"wrote {args.html}", file=sys.stderr)
    return ExitCode.OK


def _estimate(args: argparse.Namespace) -> int:
    logs.configure("text", args.log_level)
    try:
        result = api.estimate_job(
            args.job,
            sample=args.sample,
            count_tokens=args.count_tokens,
            local_server=args.local_server,
            prices=args.prices,
            **flag_overrides(args),
        )
    except FatalApiError as exc:
        print(f"batchgen: stopped: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    print(render_estimate(result), end="")
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    job = api.as_job(args.job, **flag_overrides(args))
    key = None if args.local_server else api.api_key(job)
    logs.configure(args.log_format, args.log_level, secrets=[key] if key else [])
    view = _View(
        mode=None if args.quiet else "live" if sys.stdout.isatty() else "log", interval_s=args.progress_interval
    )
    if view.interval_s <= 0:
        raise ConfigError("--progress-interval must be positive")
    options = {
        "limit": args.limit,
        "allow_duplicate_ids": args.allow_duplicate_ids,
        "retry_failed": args.retry_failed,
        "force": args.force,
        "prices": args.prices,
    }
    interrupted: list[int] = []
    summary = run_blocking(_run_async, job, key, args.local_server, options, view, interrupted)
    if summary is None:  # a second signal cancelled the run outright: nothing more to report
        return ExitCode.SIGTERM if interrupted and interrupted[0] == signal.SIGTERM else ExitCode.SIGINT
    logs.run_finished(
        summary.run_id,
        summary.stats,
        cost_usd=summary.cost_usd,
        stopped_by=summary.stopped_by,
        exit_code=summary.exit_code,
    )
    if summary.stopped_by is not None:
        print(f"batchgen: stopped: {summary.stopped_by}", file=sys.stderr)
    _print_summary(summary, sys.stdout)
    return summary.exit_code


@dataclass(frozen=True, slots=True)
class _View:
    """How progress is shown: a live display, log lines every `interval_s`, or not at all (None)."""

    mode: progress.Mode | None
    interval_s: float


async def _run_async(
    job: Job, key: ApiKey | None, local_server: bool, options: dict[str, Any], view: _View, interrupted: list[int]
) -> RunSummary | None:
    """The run, with the signal watcher and the progress display beside it; None when a second signal
    cancelled it outright."""
    runs: list[LiveRun] = []
    showing = anyio.CancelScope()
    summary: RunSummary | None = None
    failure: BatchgenError | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_signals, runs, interrupted, group.cancel_scope)

        def started(run: LiveRun) -> None:
            runs.append(run)
            logs.run_started(run.run_id, job, run.stats)
            if view.mode is not None:
                group.start_soon(_show, run, view, showing)

        try:
            summary = await api.run_job_async(
                job,
                local_server=local_server,
                api_key=None if key is None else key.reveal(),
                on_start=started,
                **options,
            )
        except BatchgenError as exc:
            # Raised below, outside the task group, so that the caller gets it as is, not in an exception group.
            failure = exc
        showing.cancel()  # at once: no progress line may follow the run's end
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return summary


async def _show(run: LiveRun, view: _View, scope: anyio.CancelScope) -> None:
    assert view.mode is not None
    budget = run.budget
    watch = progress.Watch(run.stats, run.limiter.snapshot, None if budget is None else (lambda: budget.spent.total))
    with scope:
        await progress.show(progress.Progress(watch), view.mode, interval_s=view.interval_s)


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
            runs[0].stop(Interrupted(signum))


def _print_summary(summary: RunSummary, out: TextIO) -> None:
    stats = summary.stats
    usage = stats.usage
    counts = ", ".join(f"{s.value} {stats.counts[s]}" for s in Status if stats.counts[s])
    resumed = f"; {stats.skipped_rows} already done in earlier runs" if stats.skipped_rows else ""
    print(f"run {summary.run_id}: {stats.done} rows ({counts or 'none'}){resumed}", file=out)
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
    if summary.budget is not None:
        budget = summary.budget
        cap = "" if budget.cap_usd is None else f" of a {usd(budget.cap_usd)} cap"
        print(f"cost: {usd(budget.spent.total)}{cap} ({budget.price.model}, as `batchgen report` prices it)", file=out)
    print(f"results: {summary.output.resolve()}", file=out)
