"""The fake server's configuration and command line: flags to ServerConfig, validation, and
`python -m batchgen.fakeserver` as a real process that prints its URL, serves, and stops on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

import batchgen
from batchgen.fakeserver import BatchConfig, FilesConfig, ServerConfig, TierConfig, add_arguments, serve
from batchgen.fakeserver.cli import config_from

ROOT = Path(batchgen.__file__).resolve().parent.parent


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_match_server_config() -> None:
    """With no flags, the CLI builds the default ServerConfig."""
    assert config_from(parse()) == ServerConfig()


def test_flags_map_onto_config() -> None:
    """Each flag lands in its ServerConfig field; weights parse as NAME=NUMBER lists."""
    config = config_from(
        parse(
            "--host", "0.0.0.0", "--port", "8123", "--api-key", "k",
            "--models", "gemini-2.5-flash, gemini-3-pro",
            "--latency-ms", "20", "--latency-jitter-ms", "5", "--seed", "9", "--fail-rate", "0.1",
            "--fault-weights", "500=1,503=2.5", "--violate-rate", "0.2", "--violation-weights", "safety=1",
            "--slow-s", "3", "--retry-delay-s", "0.5", "--rpm", "100", "--tpm", "5000", "--rpd", "1000",
            "--quota-window-s", "2", "--day-window-s", "30",
        )
    )  # fmt: skip
    assert config.host == "0.0.0.0" and config.port == 8123 and config.api_key == "k"
    assert config.models == ("gemini-2.5-flash", "gemini-3-pro")
    assert (config.latency_ms, config.latency_jitter_ms, config.seed) == (20, 5, 9)
    assert (config.fail_rate, dict(config.fault_weights)) == (0.1, {"500": 1.0, "503": 2.5})
    assert (config.violate_rate, dict(config.violation_weights)) == (0.2, {"safety": 1.0})
    assert (config.slow_s, config.retry_delay_s) == (3, 0.5)
    assert (config.rpm, config.tpm, config.rpd, config.quota_window_s, config.day_window_s) == (
        100,
        5000,
        1000,
        2,
        30,
    )


def test_tier_flags_map_onto_their_settings() -> None:
    """The service tier flags land in ServerConfig.tiers."""
    config = config_from(
        parse(
            "--flex-latency-ms", "50", "--flex-fail-rate", "0.5", "--flex-fail-weights", "503=3,429=1",
            "--no-tier-header", "--usage-traffic-type",
        )
    )  # fmt: skip
    assert config.tiers == TierConfig(
        flex_latency_ms=50, flex_fail_rate=0.5, flex_fail_weights={"503": 3.0, "429": 1.0}, header=False,
        usage_traffic_type=True,
    )  # fmt: skip


def test_file_and_batch_flags_map_onto_their_settings() -> None:
    """The Files API and Batch API flags land in ServerConfig.files and .batch."""
    config = config_from(
        parse(
            "--file-size-limit", "1000", "--upload-granularity", "0", "--download-uploads",
            "--missing-file-status", "404", "--batch-turnaround-s", "0.5", "--batch-turnaround-jitter-s", "0.1",
            "--batch-pending-share", "0.5", "--batch-in-order", "--batch-error-rate", "0.1",
            "--batch-error-shape", "mixed", "--batch-missing-rate", "0.2", "--batch-fail-rate", "0.3",
            "--batch-expire-rate", "0.4", "--batch-max-concurrent", "5", "--batch-limit-status", "400",
            "--batch-cancel-output", "partial", "--batch-output-lag-s", "1",
        )
    )  # fmt: skip
    assert config.files == FilesConfig(size_limit=1000, upload_granularity=0, download_uploads=True, missing_status=404)
    assert config.batch == BatchConfig(
        turnaround_s=0.5,
        turnaround_jitter_s=0.1,
        pending_share=0.5,
        shuffle=False,
        error_rate=0.1,
        error_shape="mixed",
        missing_rate=0.2,
        fail_rate=0.3,
        expire_rate=0.4,
        max_concurrent=5,
        limit_status=400,
        cancel_output="partial",
        output_lag_s=1.0,
    )


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        pytest.param(FilesConfig, {"missing_status": 410}, id="file-missing-status"),
        pytest.param(FilesConfig, {"size_limit": 0}, id="file-size-limit"),
        pytest.param(BatchConfig, {"error_rate": 2.0}, id="batch-error-rate"),
        pytest.param(BatchConfig, {"error_shape": "both"}, id="batch-error-shape"),
        pytest.param(BatchConfig, {"turnaround_s": -1.0}, id="batch-turnaround"),
        pytest.param(BatchConfig, {"max_concurrent": 0}, id="batch-max-concurrent"),
        pytest.param(BatchConfig, {"limit_status": 503}, id="batch-limit-status"),
        pytest.param(BatchConfig, {"cancel_output": "all"}, id="batch-cancel-output"),
        pytest.param(TierConfig, {"flex_latency_ms": -5.0}, id="flex-latency"),
    ],
)
def test_invalid_file_batch_and_tier_settings_are_refused(kind: type, fields: dict[str, object]) -> None:
    """Each settings value checks its own fields when it is built."""
    with pytest.raises(ValueError):
        kind(**fields)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"fail_rate": 1.5}, id="fail-rate"),
        pytest.param({"violate_rate": -0.1}, id="violate-rate"),
        pytest.param({"fault_weights": {"boom": 1.0}}, id="unknown-fault"),
        pytest.param({"violation_weights": {"500": 1.0}}, id="transport-name-as-violation"),
        pytest.param({"fault_weights": {"500": -1.0}}, id="negative-weight"),
        pytest.param({"rpm": 0}, id="rpm-zero"),
        pytest.param({"quota_window_s": 0.0}, id="empty-window"),
        pytest.param({"api_key": ""}, id="empty-key"),
        pytest.param({"port": 70000}, id="port"),
    ],
)
def test_invalid_config_is_refused(changes: dict[str, object]) -> None:
    """Out-of-range values and unknown fault names raise ValueError when the config is built."""
    with pytest.raises(ValueError):
        ServerConfig(**changes)  # type: ignore[arg-type]


def test_config_weights_are_frozen() -> None:
    """A config owns a read-only copy of the weights it was given."""
    weights = {"500": 1.0}
    config = ServerConfig(fault_weights=weights)
    weights["503"] = 1.0
    assert dict(config.fault_weights) == {"500": 1.0}
    with pytest.raises(TypeError):
        config.fault_weights["503"] = 2.0  # type: ignore[index]


def test_serve_rejects_invalid_flags_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Inconsistent flags make serve() return 2 with a message on stderr, before listening."""
    assert serve(parse("--fail-rate", "3")) == 2
    assert "fail_rate" in capsys.readouterr().err


@pytest.mark.anyio
async def test_module_runs_prints_url_serves_and_stops_on_sigterm() -> None:
    """`python -m batchgen.fakeserver --port 0` prints its URL first, answers requests, exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchgen.fakeserver", "--port", "0", "--api-key", "cli-key",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), timeout=15)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            body = orjson.dumps({"contents": [{"parts": [{"text": "hello"}]}]})
            async with session.post(
                f"{url}/v1beta/models/gemini-2.5-flash:generateContent",
                data=body,
                headers={"x-goog-api-key": "cli-key"},
            ) as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    assert b"cli-key" not in await process.stderr.read()
