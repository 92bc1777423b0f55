"""batchgen: run large batches of Gemini generateContent calls reliably, fast and cheaply.

The Python API (the `batchgen` command is a shell over it):

    summary = batchgen.run_job("jobs/demo.toml", local_server=True)   # a RunSummary; .exit_code as the CLI's
    table = batchgen.read_results("out/demo")                          # a pyarrow Table of the results

`check_job` and `estimate_job` do what `batchgen check` and `batchgen estimate` do; `batch_status` and
`cancel_batches` what `batchgen status` and `batchgen cancel` do for a batch job's results folder. A job is a
job file, a `Job` (`load_job`, `job_from_dict`) or a mapping of the job file's shape. Every error is a `BatchgenError`;
see `batchgen.errors` for the tree. The pieces of a run live in the sub-packages (see the architecture doc).
"""

from __future__ import annotations

from batchgen.api import (
    Checked,
    batch_status,
    cancel_batches,
    check_job,
    estimate_job,
    read_results,
    run_job,
    run_job_async,
)
from batchgen.errors import (
    ApiError,
    AuthError,
    BatchgenError,
    BudgetExhausted,
    ConfigError,
    ExitCode,
    FatalApiError,
    InputError,
    Interrupted,
    JobRejected,
    MalformedResponse,
    OutputError,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    RetryableError,
    SchemaError,
    ServerError,
    TransportError,
    Unreachable,
)
from batchgen.job import Job, job_from_dict, load_job
from batchgen.pipeline import LiveRun, RunSummary
from batchgen.records import Status, Usage
from batchgen.report.estimate import Estimate

__all__ = [
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
