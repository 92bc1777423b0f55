"""The package's table of contents: exactly the public API, sorted, every name importable."""

from __future__ import annotations

import batchgen
import batchgen.errors as errors

PUBLIC_API = [
    "ApiError",
    "AuthError",
    "BatchgenError",
    "BudgetExhausted",
    "Checked",
    "ConfigError",
    "Estimate",
    "ExitCode",
    "FatalApiError",
    "InputError",
    "Interrupted",
    "Job",
    "JobRejected",
    "LiveRun",
    "MalformedResponse",
    "OutputError",
    "QuotaExhausted",
    "RateLimited",
    "RequestRejected",
    "RetryableError",
    "RunSummary",
    "SchemaError",
    "ServerError",
    "Status",
    "TransportError",
    "Unreachable",
    "Usage",
    "batch_status",
    "cancel_batches",
    "check_job",
    "estimate_job",
    "job_from_dict",
    "load_job",
    "read_results",
    "run_job",
    "run_job_async",
]


def test_all_is_exactly_the_public_api_sorted_and_importable() -> None:
    """A name joins or leaves the public API on purpose: this list changes with it (and the CHANGELOG)."""
    assert batchgen.__all__ == PUBLIC_API == sorted(PUBLIC_API)
    for name in batchgen.__all__:
        assert getattr(batchgen, name) is not None, name


def test_every_error_class_is_exported() -> None:
    classes = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    assert classes <= set(batchgen.__all__)
