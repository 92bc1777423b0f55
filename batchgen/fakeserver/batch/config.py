"""Settings of the fake Files API: a frozen value, validated once when it is built.

Where Google's behaviour is not documented (the reference note marks it UNCONFIRMED), a field chooses among
the plausible answers and its default is the most likely one; the comment names the source or the guess.
"""

from __future__ import annotations

from dataclasses import dataclass


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
