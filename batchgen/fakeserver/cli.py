"""Command line of the fake server: `add_arguments` fills a parser, `serve` runs until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from batchgen.fakeserver.batch.config import CANCEL_OUTPUTS, ERROR_SHAPES, BatchConfig, FilesConfig
from batchgen.fakeserver.config import OUTPUT_FAULTS, TRANSPORT_FAULTS, ServerConfig
from batchgen.fakeserver.server import FakeServer
from batchgen.fakeserver.tiers import TierConfig


def _weights(text: str) -> dict[str, float]:
    """Parse "500=1,503=2" into weights."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value) if sep else 1.0
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad weight {item!r}; expected NAME=NUMBER") from exc
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fake server's flags to `parser`."""
    defaults = ServerConfig()
    add = parser.add_argument
    add("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=defaults.port, help="port; 0 picks a free one (default %(default)s)")
    add("--api-key", default=defaults.api_key, help="the key clients must send (default: fake-key)")
    add("--models", default="", help="comma-separated model names served (default: any gemini-*)")
    add("--latency-ms", type=float, default=defaults.latency_ms, help="mean added latency per request")
    add("--latency-jitter-ms", type=float, default=defaults.latency_jitter_ms, help="standard deviation")
    add("--seed", type=int, default=defaults.seed, help="seed of all deterministic draws")
    add(
        "--fail-rate",
        type=float,
        default=defaults.fail_rate,
        help="fraction of requests given a transport fault",
    )
    add(
        "--fault-weights",
        type=_weights,
        default=None,
        help=f"weights of transport faults, e.g. 503=2,drop=1 (names: {', '.join(TRANSPORT_FAULTS)})",
    )
    add("--violate-rate", type=float, default=defaults.violate_rate, help="fraction given an output fault")
    add(
        "--violation-weights",
        type=_weights,
        default=None,
        help=f"relative weights of output faults (names: {', '.join(OUTPUT_FAULTS)})",
    )
    add("--slow-s", type=float, default=defaults.slow_s, help="stall of a 'slow' fault, in seconds")
    add("--retry-delay-s", type=float, default=defaults.retry_delay_s, help="RetryInfo delay of injected 429s")
    add("--rpm", type=int, default=None, help="requests per minute per model")
    add("--tpm", type=int, default=None, help="input tokens per minute per model")
    add("--rpd", type=int, default=None, help="requests per day per model")
    add("--quota-window-s", type=float, default=defaults.quota_window_s, help="length of the rpm/tpm window")
    add("--day-window-s", type=float, default=None, help="length of the rpd window (default: Pacific day)")
    _add_file_flags(parser.add_argument_group("Files API"))
    _add_batch_flags(parser.add_argument_group("Batch API"))
    _add_tier_flags(parser.add_argument_group("service tiers"))


def _add_file_flags(group: argparse._ArgumentGroup) -> None:
    defaults = FilesConfig()
    add = group.add_argument
    add("--file-size-limit", type=int, default=defaults.size_limit, help="largest file in bytes (default 2 GiB)")
    add(
        "--upload-granularity",
        type=int,
        default=defaults.upload_granularity,
        help="non-final upload chunks must be multiples of this many bytes; 0 accepts any (default 8 MiB)",
    )
    add("--download-uploads", action="store_true", help="serve uploaded files too (the API serves generated ones)")
    add(
        "--missing-file-status",
        type=int,
        choices=(403, 404),
        default=defaults.missing_status,
        help="status of an unknown file (default 403, the live API's)",
    )


def _add_batch_flags(group: argparse._ArgumentGroup) -> None:
    defaults = BatchConfig()
    add = group.add_argument
    add("--batch-turnaround-s", type=float, default=defaults.turnaround_s, help="seconds from create to done")
    add("--batch-turnaround-jitter-s", type=float, default=defaults.turnaround_jitter_s, help="spread per job")
    add("--batch-pending-share", type=float, default=defaults.pending_share, help="share of it spent PENDING")
    add("--batch-in-order", action="store_true", help="results files in input order (default: shuffled)")
    add("--batch-error-rate", type=float, default=defaults.error_rate, help="fraction of lines that fail")
    add("--batch-error-shape", choices=ERROR_SHAPES, default=defaults.error_shape, help="key of failed file lines")
    add("--batch-missing-rate", type=float, default=defaults.missing_rate, help="fraction of keys left out")
    add("--batch-fail-rate", type=float, default=defaults.fail_rate, help="fraction of jobs that end FAILED")
    add("--batch-expire-rate", type=float, default=defaults.expire_rate, help="fraction of jobs that end EXPIRED")
    add("--batch-max-concurrent", type=int, default=defaults.max_concurrent, help="jobs pending or running at once")
    add(
        "--batch-limit-status",
        type=int,
        choices=(400, 429),
        default=defaults.limit_status,
        help="status of a create past it",
    )
    add("--batch-cancel-output", choices=CANCEL_OUTPUTS, default=defaults.cancel_output, help="output when cancelled")
    add("--batch-output-lag-s", type=float, default=defaults.output_lag_s, help="SUCCEEDED without output this long")


def _add_tier_flags(group: argparse._ArgumentGroup) -> None:
    defaults = TierConfig()
    add = group.add_argument
    add("--flex-latency-ms", type=float, default=defaults.flex_latency_ms, help="added wait of flex requests")
    add("--flex-fail-rate", type=float, default=defaults.flex_fail_rate, help="fraction of flex requests shed")
    add("--flex-fail-weights", type=_weights, default=None, help="weights of 503 and 429 sheds, e.g. 503=3,429=1")
    add("--no-tier-header", action="store_true", help="no x-gemini-service-tier header on answers")
    add("--usage-traffic-type", action="store_true", help="usageMetadata.trafficType on answers (Vertex's field)")


def config_from(args: argparse.Namespace) -> ServerConfig:
    """The ServerConfig the parsed flags describe; raises ValueError when they are inconsistent."""
    defaults = ServerConfig()
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        seed=args.seed,
        fail_rate=args.fail_rate,
        fault_weights=args.fault_weights if args.fault_weights is not None else defaults.fault_weights,
        violate_rate=args.violate_rate,
        violation_weights=(
            args.violation_weights if args.violation_weights is not None else defaults.violation_weights
        ),
        slow_s=args.slow_s,
        retry_delay_s=args.retry_delay_s,
        rpm=args.rpm,
        tpm=args.tpm,
        rpd=args.rpd,
        quota_window_s=args.quota_window_s,
        day_window_s=args.day_window_s,
        files=FilesConfig(
            size_limit=args.file_size_limit,
            upload_granularity=args.upload_granularity,
            download_uploads=args.download_uploads,
            missing_status=args.missing_file_status,
        ),
        batch=_batch_config(args),
        tiers=TierConfig(
            flex_latency_ms=args.flex_latency_ms,
            flex_fail_rate=args.flex_fail_rate,
            flex_fail_weights=(
                args.flex_fail_weights if args.flex_fail_weights is not None else defaults.tiers.flex_fail_weights
            ),
            header=not args.no_tier_header,
            usage_traffic_type=args.usage_traffic_type,
        ),
    )


def _batch_config(args: argparse.Namespace) -> BatchConfig:
    return BatchConfig(
        turnaround_s=args.batch_turnaround_s,
        turnaround_jitter_s=args.batch_turnaround_jitter_s,
        pending_share=args.batch_pending_share,
        shuffle=not args.batch_in_order,
        error_rate=args.batch_error_rate,
        error_shape=args.batch_error_shape,
        missing_rate=args.batch_missing_rate,
        fail_rate=args.batch_fail_rate,
        expire_rate=args.batch_expire_rate,
        max_concurrent=args.batch_max_concurrent,
        limit_status=args.batch_limit_status,
        cancel_output=args.batch_cancel_output,
        output_lag_s=args.batch_output_lag_s,
    )


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT or SIGTERM. Prints its URL on the first line of stdout. Returns 0, or 2
    when the flags are invalid (the message goes to stderr)."""
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"fake-server: {exc}", file=sys.stderr)
        return 2
    runner = _loop_runner()
    with runner:
        runner.run(_serve(config))
    return 0


def _loop_runner() -> asyncio.Runner:
    # uvloop (the "fast" extra) trims the per-request overhead of the event loop; plain asyncio works too.
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


async def _serve(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with FakeServer(config) as server:
            print(server.url, flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """`python -m batchgen.fakeserver [flags]`."""
    parser = argparse.ArgumentParser(prog="python -m batchgen.fakeserver", description="Run the fake Gemini API.")
    add_arguments(parser)
    return serve(parser.parse_args(argv))
