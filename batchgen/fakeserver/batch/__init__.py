"""The fake Files and Batch APIs: files uploaded and generated, batch jobs run over the online answer generator.

    config       FilesConfig, BatchConfig: the settings (UNCONFIRMED behaviours are switches here)
    resources    ids, timestamps, int64 fields, list pages, google.rpc codes
    files        the file store and the File resource
    upload       Google's resumable upload protocol
    files_api    the Files API routes
    lines        a batchGenerateContent body checked, and its input lines read
    answers      one batch line answered (or failed, or left out)
    jobs         a batch job and its long-running operation object
    runner       a job's timeline: PENDING, RUNNING, its end and its output
    batches_api  the Batch API routes
    ledger       the counters behind GET /_fake/stats' "files" and "batches"
    http         route wrappers shared by both APIs
    api          BatchApis: everything above, wired for the app

Only `config` is imported here: the server's ServerConfig holds these settings, and the rest imports it.
"""

from __future__ import annotations

from batchgen.fakeserver.batch.config import BatchConfig, FilesConfig

__all__ = ["BatchConfig", "FilesConfig"]
