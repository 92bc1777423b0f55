"""The fake Files API (and, to come, the Batch API over the online answer generator).

    config       FilesConfig: the settings (UNCONFIRMED behaviours are switches here)
    resources    ids, timestamps, int64 fields, list pages
    files        the file store and the File resource
    upload       Google's resumable upload protocol
    files_api    the Files API routes
    ledger       the counters behind GET /_fake/stats' "files"
    http         route wrappers
    api          BatchApis: everything above, wired for the app

Only `config` is imported here: the server's ServerConfig holds these settings, and the rest imports it.
"""

from __future__ import annotations

from batchgen.fakeserver.batch.config import FilesConfig

__all__ = ["FilesConfig"]
