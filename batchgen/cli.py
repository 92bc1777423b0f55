"""Edge: argv in; a job run (through `batchgen.api`), a printed summary and an exit code out.

Exit codes for schedulers are `errors.ExitCode`; `batchgen --help` lists them.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn, TextIO

import anyio

from batchgen import api, fakeserver
from batchgen.batch.control import render as render_status
from batchgen.console import logs, progress
from batchgen.console.format import usd
from batchgen.errors import (
    BatchgenError,
    ConfigError,
    ExitCode,
    FatalApiError,
    Interrupted,
    exit_code_for,
)
from batchgen.job import Job
from batchgen.pipeline import LiveRun, RunSummary, run_blocking
from batchgen.records import Status
from batchgen.report.breakdown import build_report, load_results, load_runs
from batchgen.report.estimate import render as render_estimate
from batchgen.report.html import write_html
from batchgen.report.pricing import PriceTable
from batchgen.report.text import FORMATS, render

_EXIT_HELP = """exit codes:
  0    completed
  1    completed, but no row of the job is ok, or more of its rows failed than [limits]
       max_failed_fraction allows (default 0.1)
  2    usage or configuration error, or another run is writing the results folder; nothing was sent
  3    stopped by an auth error, an API that cannot be reached or rejects the job, a spent daily quota or a
       write error (resumable)
  4    stopped by the cost cap (resumable: a rerun may spend up to max_cost_usd again)
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM); rerun to resume
       (nothing more is sent; requests out get [limits] grace_s, default 30 s, to finish; a second signal
       cancels them, and what finished is still written)
"""

# Flags that replace a job key: (argparse dest, flag, [section and] key).
_OVERRIDES = (
    ("input", "--input", "input.path"),
    ("output", "--output", "output.path"),
    ("base_url", "--base-url", "base_url"),
    ("model", "--model", "model"),
    ("concurrency", "--concurrency", "limits.concurrency"),
    ("rpm", "--rpm", "limits.requests_per_minute"),
    ("tpm", "--tpm", "limits.tokens_per_minute"),
    ("rpd", "--rpd", "limits.requests_per_day"),
    ("max_cost", "--max-cost", "limits.max_cost_usd"),
    ("mode", "--mode", "mode"),
    ("batch_deadline", "--batch-deadline", "batch.deadline"),
)
_FLAG_OF = {key: flag for _, flag, key in _OVERRIDES}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `batchgen` command: every user mistake is one line on stderr (a JSON object under
    `--log-format json`) and an exit code, never a traceback."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = _json_logs(arguments)
    try:
        args = _parser().parse_args(arguments)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except _UsageError as exc:
        return _failed(str(exc), ExitCode.CONFIG, as_json)
    except BatchgenError as exc:
        return _failed(_described(exc), exit_code_for(exc), as_json)


class _UsageError(Exception):
    """A command line argparse refused (raised instead of argparse's usage text and exit)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _json_logs(arguments: Sequence[str]) -> bool:
    """Whether the command line asks for JSON logs; read before parsing, so that a bad flag is reported in
    the format its scheduler reads."""
    pairs = zip(arguments, [*arguments[1:], ""], strict=True)
    return "--log-format=json" in arguments or ("--log-format", "json") in pairs


def _described(error: BatchgenError) -> str:
    """An error for the command line: a value a flag gave is named by its flag, not by the job key."""
    if isinstance(error, ConfigError) and error.file is None and error.key in _FLAG_OF:
        return f"{_FLAG_OF[error.key]}: {error.detail}"
    return str(error)


def _failed(message: str, code: int, as_json: bool) -> int:
    if as_json:
        logs.configure("json", "error")
        logs.failed(message, code)
    else:
        print(f"batchgen: error: {message}", file=sys.stderr)
    return code


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


_COUNT = _whole(1)
_ROWS = _whole(0)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="batchgen",
        description="Run large batches of Gemini generateContent calls reliably, fast and cheaply.",
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"batchgen {version('batchgen')}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a job", epilog=_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _job_arguments(run)
    _display_arguments(run)
    run.add_argument("--limit", type=_COUNT, metavar="N", help="send at most N rows")
    run.add_argument("--allow-duplicate-ids", action="store_true", help="suffix repeated ids (#2, #3...)")
    run.add_argument(
        "--retry-failed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a rerun, send rows that ended `failed` again (default: yes)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="run a changed job into a folder an earlier version wrote: its rows are sent again and replaced",
    )
    run.add_argument(
        "--engine",
        choices=("local", "ray"),
        help="run in this process (local) or on a Ray cluster (ray; needs batchgen[ray]); default: the job's",
    )
    run.add_argument(
        "--address",
        metavar="ADDR",
        help="engine ray: the cluster (auto, or ray://HOST:10001); default: start a local Ray instance",
    )
    run.add_argument("--workers", type=int, metavar="N", help="engine ray: workers in the pool ([ray] workers)")
    _local_server_argument(run)
    run.set_defaults(handler=_run)

    guess = commands.add_parser(
        "estimate", help="rows, tokens, cost and duration of a job before paying for it (nothing sent by default)"
    )
    _job_arguments(guess)
    guess.add_argument(
        "--sample",
        type=_ROWS,
        default=0,
        metavar="N",
        help="run the first N rows for real (into a temporary folder) to measure output tokens and latency",
    )
    guess.add_argument(
        "--count-tokens",
        type=_ROWS,
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
    check.add_argument(
        "--local-server", action="store_true", help="check as for a run with --local-server (no key needed)"
    )
    check.set_defaults(handler=_check)

    report = commands.add_parser("report", help="tokens and cost from one or more results folders")
    report.add_argument("folders", type=Path, nargs="+", metavar="OUT", help="results folder(s)")
    report.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    report.add_argument("--prices", type=Path, metavar="FILE", help="TOML overriding the shipped price table")
    report.add_argument("--html", type=Path, metavar="PATH", help="also write a self-contained HTML page")
    report.set_defaults(handler=_report)

    status = commands.add_parser("status", help="the batch jobs of a results folder (mode = batch) and their states")
    status.add_argument("folder", type=Path, metavar="OUT", help="results folder")
    status.add_argument("--base-url", metavar="URL", help="API base URL (default: the one the jobs were sent to)")
    status.add_argument("--offline", action="store_true", help="show the folder's record only; ask the API nothing")
    status.set_defaults(handler=_status)

    cancel = commands.add_parser(
        "cancel", help="cancel a results folder's batch jobs that have not ended; the next run sends their rows again"
    )
    cancel.add_argument("folder", type=Path, metavar="OUT", help="results folder")
    cancel.add_argument("--base-url", metavar="URL", help="API base URL (default: the one the jobs were sent to)")
    cancel.set_defaults(handler=_cancel)

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
    parser.add_argument("--concurrency", type=_COUNT, metavar="N", help="requests in flight at most")
    parser.add_argument("--rpm", type=_positive, metavar="N", help="requests per minute")
    parser.add_argument("--tpm", type=_positive, metavar="N", help="input tokens per minute")
    parser.add_argument("--rpd", type=_COUNT, metavar="N", help="requests per day")
    parser.add_argument("--max-cost", type=_positive, metavar="USD", help="cost cap of one run ([limits] max_cost_usd)")
    parser.add_argument("--prices", type=Path, metavar="FILE", help="TOML overriding the shipped price table")
    parser.add_argument(
        "--mode",
        choices=("online", "batch"),
        help="send rows one call each (online) or as Batch API jobs at half price (batch); overrides the job's mode",
    )
    parser.add_argument(
        "--batch-deadline",
        metavar="DURATION",
        help="batch mode: rows of a job not answered this long after it started (6h, 90m) go online",
    )


def _display_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress display or progress lines (warnings are still logged)"
    )
    parser.add_argument(
        "--progress-interval",
        type=_positive,
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
    overrides: dict[str, Any] = {}
    for dest, _, key in _OVERRIDES:
        value = getattr(args, dest)
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        if section:
            overrides.setdefault(section, {})[name] = value
        else:
            overrides[name] = value
    return overrides


def _check(args: argparse.Namespace) -> int:
    checked = api.check_job(args.job, prices=args.prices, local_server=args.local_server, **flag_overrides(args))
    job, budget = checked.job, checked.budget
    schema = job.schema_
    mode = "" if job.mode == "online" else f", {job.mode} mode"
    print(f"{job.file}: ok: model {job.model}{mode}, {checked.rows} input rows, output {job.output.path}")
    print("  local server: ok" if args.local_server else f"  {job.base_url}, key from {job.api_key_env}: ok")
    if schema is not None:
        print(f"  {schema.dialect.value} from {schema.source or 'the job file'}: ok")
    if budget is not None and budget.cap_usd is not None:
        print(f"  cost cap {usd(budget.cap_usd)} per run, priced as {budget.price.model}: ok")
    elif budget is None:
        print(f"  no price for {job.model}: runs will not show a cost (pass --prices FILE)")
    if checked.unreadable:
        print(
            f"  warning: {checked.unreadable:,} input line(s) are not rows and will be `failed` rows; "
            f"first: {checked.first_unreadable}"
        )
    return ExitCode.OK


def _report(args: argparse.Namespace) -> int:
    table = load_results(args.folders)
    report = build_report(table, PriceTable.load(args.prices), runs=load_runs(args.folders))
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(render(report, args.format, width=width), end="")
    if args.html:
        write_html(args.html, report, table)
        print(f"wrote {args.html}", file=sys.stderr)
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    found = api.batch_status(args.folder, base_url=args.base_url, refresh=not args.offline)
    print(render_status(found), end="")
    return ExitCode.OK


def _cancel(args: argparse.Namespace) -> int:
    cancelled, ended = api.cancel_batches(args.folder, base_url=args.base_url)
    for job in cancelled:
        print(f"cancelled {job.id} ({job.job or 'not yet created'}): {job.rows:,} rows released")
    if not cancelled:
        print(f"{args.folder}: no batch job under way")
    if ended:
        print(f"{len(ended)} job(s) had ended already: the next `batchgen run` collects their rows")
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
    job = api.as_job(args.job, **flag_overrides(args), **_engine_overrides(args))
    key = None if args.local_server else api.key_from_environment(job)
    logs.configure(args.log_format, args.log_level, secrets=[key] if key else [])
    view = _View(
        mode=None if args.quiet else "live" if sys.stdout.isatty() else "log", interval_s=args.progress_interval
    )
    options = {
        "limit": args.limit,
        "allow_duplicate_ids": args.allow_duplicate_ids,
        "retry_failed": args.retry_failed,
        "force": args.force,
        "prices": args.prices,
    }
    interrupted: list[int] = []
    summary = run_blocking(_run_async, job, args.local_server, options, view, interrupted)
    if summary is None:  # a signal before the first request, or a third one: nothing more to report
        code = Interrupted(interrupted[0]).exit_code if interrupted else ExitCode.SIGINT
        logs.failed("interrupted before the run could finish; rerun the same command to resume", code)
        return code
    logs.run_finished(
        summary.run_id,
        summary.stats,
        cost_usd=summary.cost_usd,
        stopped_by=summary.stopped_by,
        exit_code=summary.exit_code,
    )
    _print_summary(summary, job.model, sys.stdout)
    if summary.live_batch_jobs:
        print(
            f"batchgen: {summary.live_batch_jobs} batch job(s) keep running at the Batch API: rerun the same command "
            f"to collect their rows (`batchgen status {summary.output}` shows them, `batchgen cancel "
            f"{summary.output}` gives them up)",
            file=sys.stderr,
        )
    return summary.exit_code


def _engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The job keys `--engine`, `--address` and `--workers` replace."""
    ray = {k: v for k, v in (("address", args.address), ("workers", args.workers)) if v is not None}
    top: dict[str, Any] = {} if args.engine is None else {"engine": args.engine}
    return top | ({"ray": ray} if ray else {})


@dataclass(frozen=True, slots=True)
class _View:
    """How progress is shown: a live display, log lines every `interval_s`, or not at all (None)."""

    mode: progress.Mode | None
    interval_s: float


async def _run_async(
    job: Job, local_server: bool, options: dict[str, Any], view: _View, interrupted: list[int]
) -> RunSummary | None:
    """The run, with the signal watcher and the progress display beside it; None when a signal came before
    the run started, or a third one cancelled it outright.

    The key is read from the job's environment variable by the run itself (the value `_run` read for the log's
    redaction), so that an auth error can name the variable.
    """
    runs: list[LiveRun] = []
    showing = anyio.CancelScope()
    summary: RunSummary | None = None
    failure: BatchgenError | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_signals, job, runs, interrupted, group.cancel_scope)

        def started(run: LiveRun) -> None:
            runs.append(run)
            logs.run_started(run.run_id, job, run.stats)
            if view.mode is not None:
                group.start_soon(_show, run, view, showing)

        try:
            summary = await api.run_job_async(
                job,
                local_server=local_server,
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
    watch = progress.Watch(
        run.stats,
        run.limiter.snapshot,
        None if budget is None else (lambda: budget.spent.total),
        note=run.note,
        stopping=lambda: run.stopping,
    )
    with scope:
        await progress.show(progress.Progress(watch), view.mode, interval_s=view.interval_s)


async def _watch_signals(job: Job, runs: list[LiveRun], interrupted: list[int], everything: anyio.CancelScope) -> None:
    # First signal: send nothing more; requests out get the grace period. Second: cancel those requests; the
    # run still writes what finished, records itself and reports. A third (or one before the run started,
    # when nothing was sent): cancel everything; the results writer still flushes what it holds, shielded.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            interrupted.append(signum)
            name = signal.Signals(signum).name
            if not runs or len(interrupted) > 2:
                everything.cancel()
                return
            run = runs[0]
            if len(interrupted) == 1:
                again = "press Ctrl-C again" if signum == signal.SIGINT else "send SIGTERM again"
                in_flight = run.stats.in_flight
                logs.stopping(run.run_id, name, in_flight=in_flight, grace_s=job.limits.grace_s, again=again)
                run.stop(Interrupted(signum))
            else:
                logs.quitting(run.run_id, name, in_flight=run.stats.in_flight)
                run.abort(Interrupted(interrupted[0]))


def _print_summary(summary: RunSummary, model: str, out: TextIO) -> None:
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
    else:
        print(f"cost: unknown: no price for {model} (pass --prices FILE to price it)", file=out)
    if summary.stopped_by is not None:
        print(f"stopped: {summary.stopped_by}", file=out)
    print(f"results: {summary.output.resolve()}", file=out)
