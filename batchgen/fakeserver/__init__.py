"""A local fake of the Gemini `generateContent` REST API and of its Files and Batch APIs, for demos, tests and
benchmarks over real HTTP.

It is an independent implementation of the wire format (it shares no code with batchgen's client), so a
format bug cannot hide on both sides. Answers are deterministic: a hash of model + request body + seed.

Endpoints (paths as Google's):
    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent   SSE with ?alt=sse, else a JSON array
    POST /v1beta/models/{model}:countTokens              {contents} or {generateContentRequest}
    POST /v1beta/models/{model}:batchGenerateContent     a batch job from a file or inline requests
    GET  /v1beta/batches[/{id}]                          list {"operations", "nextPageToken"}, or one job
    POST /v1beta/batches/{id}:cancel                     {}; DELETE /v1beta/batches/{id}: {}
    POST /upload/v1beta/files                            resumable upload: start, then upload/finalize/query
    GET  /v1beta/files[/{id}]                            list {"files", "nextPageToken"}, or one File
    DELETE /v1beta/files/{id}                            {}
    GET  [/download]/v1beta/files/{id}:download?alt=media  a file's bytes (generated files only, by default)
    GET  /_fake/stats                                    the ledger, as JSON (with admissions per second)

The key goes in `x-goog-api-key`, `Authorization: Bearer <key>` or `?key=`: none is 403 PERMISSION_DENIED,
a wrong one 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID. Every route checks it, except an
upload's session URL (`X-Goog-Upload-URL`), which is its own credential as at Google.

Prompt directives: a prompt text containing `[[fake:NAME]]` gets fault NAME on every attempt;
`[[fake:NAME*K]]` only on its next K attempts (attempts are counted per request hash, so a retry of the same
body is the next attempt). Several directives apply one after another: `[[fake:429*1]][[fake:500*2]]` is a
429, then two 500s, then a normal answer. A prompt with directives gets no random faults. NAME is one of:

    429           429 RESOURCE_EXHAUSTED "shared capacity" with Help and RetryInfo (retry_delay_s)
    429help       the same 429 with only a Help detail (no RetryInfo, no QuotaFailure)
    429day        429 with QuotaFailure GenerateRequestsPerDayPerProjectPerModel, RetryInfo until the day ends
    500           500 INTERNAL
    503           503 UNAVAILABLE "The model is overloaded"
    drop          the connection is closed without any response
    slow          the answer comes after slow_s more seconds (meant to exceed the client's timeout)
    nonjson       HTTP 200 with an HTML body
    nocandidates  HTTP 200 JSON without candidates or usageMetadata
    sse_cut       a stream stops mid-event and the connection closes (unary: half the body, then close)
    sse_error     a stream sends some events, then an {"error": ...} object that is not data-prefixed
                  (unary: 500)
    blocked       promptFeedback.blockReason SAFETY and no candidates
    safety        finishReason SAFETY with no content
    max_tokens    finishReason MAX_TOKENS and the text (JSON) cut in half
    invalid_json  text that is not JSON
    schema_violation  JSON that breaks the schema: a missing required property, a wrong type, an unlisted enum
                  value, or a wrong root type (invalid JSON when the schema accepts anything)
    missing       (batch lines only) the line's key is left out of the job's output, silently
    error_line    (batch lines only) an INTERNAL error line under "error"; status_line: under "status"

In a batch line, 429 / 429help / 429day / 500 / 503 become an error line with that status, the other
transport faults an INTERNAL one (nocandidates a response without candidates), and output faults break the
response as online; attempts are counted with the online ones, so `[[fake:500*1]]` fails one job and is
answered when resubmitted. A batch's display name may hold `[[fake:batch_failed]]` (the job stops halfway,
FAILED) or `[[fake:batch_expired]]` (it never runs, EXPIRED).

Random faults: `fail_rate` of generate requests get a transport fault (weights `fault_weights`; sse_* only
for streams) and, separately, `violate_rate` get an output fault (weights `violation_weights`; invalid_json
and schema_violation only in JSON mode), each drawn from seed + request hash + attempt number. Batch lines
draw against the batch settings' own rates instead.

Quotas (`rpm`, `tpm` of input tokens, `rpd`, per model) answer 429 RESOURCE_EXHAUSTED with QuotaFailure,
Help and RetryInfo; see `quota`. Billing and counters: see `stats`.

Service tiers (`ServerConfig.tiers`, a TierConfig; see `tiers`): a request's top-level `serviceTier`
("standard", "flex", "priority", any case) is answered with an `x-gemini-service-tier` header naming it (as
the live API does; `header`); flex requests wait `flex_latency_ms` (0) and `flex_fail_rate` (0) of them are
shed with 503 or 429 (`flex_fail_weights`, 1:1); `usage_traffic_type` (off) also writes Vertex's
usageMetadata.trafficType (ON_DEMAND_FLEX...), which the Gemini API is documented not to send.
Flags: `--flex-latency-ms`, `--flex-fail-rate`, `--flex-fail-weights`, `--no-tier-header`,
`--usage-traffic-type`.

Files (`ServerConfig.files`, a FilesConfig; see `batch.files`, `batch.upload`): files live in memory, up to
`size_limit` bytes (2 GiB; more is 400); non-final upload chunks are multiples of `upload_granularity`
(8 MiB; 0: any size); `download_uploads` (off) serves uploaded files as well as generated ones; an unknown
file is `missing_status` (403 PERMISSION_DENIED, the live answer; or 404). Flags: `--file-size-limit`,
`--upload-granularity`, `--download-uploads`, `--missing-file-status`.

Batches (`ServerConfig.batch`, a BatchConfig; see `batch.runner`, `batch.answers`, `batch.jobs`): each line
is answered by the online generator (same body, same answer and usage). A job is PENDING for `pending_share`
(0.25) of `turnaround_s` (2 s, +- `turnaround_jitter_s`, 0), then RUNNING with its lines answered evenly over
the rest, then SUCCEEDED with a results file `files/batch-<id>`, shuffled unless `shuffle` is off, or inline
responses in input order; `output_lag_s` (0) delays the output after SUCCEEDED. Faults: `error_rate` and
`missing_rate` (0) per line, error lines keyed `error_shape` ("error", "status" or "mixed"; "error"),
`fail_rate` and `expire_rate` (0) per job. `max_concurrent` (100) jobs PENDING or RUNNING at once, one more
is `limit_status` (429, or 400). A cancel is instant; `cancel_output` ("none", or "partial") says whether the
lines done are kept. Batch tokens are billed in the ledger's "batches" section; batch lines carry no tier.
Flags: `--batch-turnaround-s`, `--batch-turnaround-jitter-s`, `--batch-pending-share`, `--batch-in-order`,
`--batch-error-rate`, `--batch-error-shape`, `--batch-missing-rate`, `--batch-fail-rate`,
`--batch-expire-rate`, `--batch-max-concurrent`, `--batch-limit-status`, `--batch-cancel-output`,
`--batch-output-lag-s`.
"""

from __future__ import annotations

from batchgen.fakeserver.batch import BatchConfig, FilesConfig
from batchgen.fakeserver.cli import add_arguments, serve
from batchgen.fakeserver.config import BATCH_FAULTS, FAULT_NAMES, OUTPUT_FAULTS, TRANSPORT_FAULTS, ServerConfig
from batchgen.fakeserver.server import FakeServer
from batchgen.fakeserver.stats import Stats
from batchgen.fakeserver.tiers import TierConfig

__all__ = [
    "BATCH_FAULTS",
    "FAULT_NAMES",
    "OUTPUT_FAULTS",
    "TRANSPORT_FAULTS",
    "BatchConfig",
    "FakeServer",
    "FilesConfig",
    "ServerConfig",
    "Stats",
    "TierConfig",
    "add_arguments",
    "serve",
]
