"""Settings of the fake Files and Batch APIs: two frozen values, validated once when they are built.

Where Google's behaviour is not documented (the reference note marks it UNCONFIRMED), a field chooses among
the plausible answers and its default is the most likely one; the comment names the source or the guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ERROR_SHAPES = ("error", "status", "mixed")
CANCEL_OUTPUTS = ("none", "partial")


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """How the Files API stores, uploads and serves files."""

    # The Files API's per-file limit (reference note, section 8); bigger uploads get a 400.
    size_limit: int = 2 * 1024**3
    # Non-final upload chunks must be a multiple of this many bytes (sent as X-Goog-Upload-Chunk-Granularity).
    # Google's value is UNCONFIRMED; the SDK's 8 MiB chunks work against any power-of-two granularity up to
    # that, so a client that passes here passes there. 0 accepts chunks of any size.
    upload_granularity: int = 8 * 1024**2
    # The SDK refuses to download an uploaded file ("Only generated files can be downloaded"), so the real API
    # presumably refuses too (400); True serves uploaded bytes as well, for round-trip tests.
    download_uploads: bool = False
    # An unknown or deleted file: the live API answers 403 PERMISSION_DENIED ("You do not have permission to
    # access the File ... or it may not exist", google-gemini/deprecated-generative-ai-python issue #692);
    # 404 NOT_FOUND is the other plausible answer.
    missing_status: int = 403

    def __post_init__(self) -> None:
        if self.size_limit < 1:
            raise ValueError(f"files size_limit must be at least 1 byte, got {self.size_limit}")
        if self.upload_granularity < 0:
            raise ValueError(f"upload_granularity must be >= 0, got {self.upload_granularity}")
        if self.missing_status not in (403, 404):
            raise ValueError(f"missing_status must be 403 or 404, got {self.missing_status}")


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """How batch jobs run: their timing, the faults injected into them, and the limits on them.

    A job stays PENDING for `pending_share` of its turnaround, then RUNNING while its lines are answered one
    after another, evenly spread over the rest; its turnaround is `turnaround_s`, moved by up to
    `turnaround_jitter_s` either way (a uniform draw per job).
    """

    turnaround_s: float = 2.0
    turnaround_jitter_s: float = 0.0
    pending_share: float = 0.25
    # File output in a shuffled order (Google promises no order: join on key); inline output keeps the input
    # order, as the docs say.
    shuffle: bool = True
    # Fractions of lines answered with an error line, or silently left out of the output.
    error_rate: float = 0.0
    missing_rate: float = 0.0
    # Which key a failed file line carries: {"key", "error": {code, message, status}} or {"key", "status":
    # {code, message}} with a google.rpc code; "mixed" draws one per line. The docs say only "a status object"
    # (UNCONFIRMED); the SDK names the inline field `error`, so that is the default.
    error_shape: str = "error"
    # Fractions of jobs that end FAILED (after running half their lines) or EXPIRED (without running).
    fail_rate: float = 0.0
    expire_rate: float = 0.0
    # Jobs PENDING or RUNNING at once; one more is refused with `limit_status`: 429 RESOURCE_EXHAUSTED (what
    # the live API answers batch creates over quota, langchain4j PR #3942) or 400 FAILED_PRECONDITION.
    max_concurrent: int = 100
    limit_status: int = 429
    # What a cancelled job reports: no output (probed: "usually no per-item output", tobert/kaibo PR #8), or
    # the lines answered before the cancel. UNCONFIRMED.
    cancel_output: str = "none"
    # Seconds a SUCCEEDED job goes without its output (a live quirk: tidyverse/ellmer PR #926 keeps polling
    # when the state is SUCCEEDED but the file is not there yet).
    output_lag_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("turnaround_s", "turnaround_jitter_s", "output_lag_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"batch {name} must be finite and >= 0, got {value}")
        for name in ("pending_share", "error_rate", "missing_rate", "fail_rate", "expire_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"batch {name} must be in [0, 1], got {value}")
        if self.error_shape not in ERROR_SHAPES:
            raise ValueError(f"batch error_shape must be one of {', '.join(ERROR_SHAPES)}, got {self.error_shape!r}")
        if self.cancel_output not in CANCEL_OUTPUTS:
            raise ValueError(f"batch cancel_output must be none or partial, got {self.cancel_output!r}")
        if self.max_concurrent < 1:
            raise ValueError(f"batch max_concurrent must be at least 1, got {self.max_concurrent}")
        if self.limit_status not in (400, 429):
            raise ValueError(f"batch limit_status must be 400 or 429, got {self.limit_status}")
