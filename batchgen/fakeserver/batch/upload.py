"""Google's resumable upload protocol, as the Files API speaks it and the SDK drives it (`_api_client.py`).

1. start: POST /upload/v1beta/files with `X-Goog-Upload-Protocol: resumable`, `X-Goog-Upload-Command:
   start`, optionally `X-Goog-Upload-Header-Content-Length` and `-Content-Type`, and a JSON body
   `{"file": {"displayName", "mimeType", "name"?}}`. The answer is 200 with an empty body and the session URL
   in `X-Goog-Upload-URL` (`.../upload/v1beta/files?upload_id=...&upload_protocol=resumable`).
2. POST to the session URL with `X-Goog-Upload-Command`: "upload" (a chunk, more to come), "upload, finalize"
   (the last chunk, or the whole file in one go), "finalize" (all bytes are in), "query" (how many bytes
   arrived: `X-Goog-Upload-Size-Received`) or "cancel". Every upload carries `X-Goog-Upload-Offset`, the
   bytes received so far; a wrong offset is refused and the session stays open, so the client can query and
   resume. The final answer is `{"file": {...}}`.

The session URL is its own credential: the SDK sends no API key with chunks. Every answer to a session
request, errors included, carries `X-Goog-Upload-Status` (active, final or cancelled): the SDK resends a chunk
whose answer lacks it, as it would after a network failure.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.fakeserver.batch.config import FilesConfig
from batchgen.fakeserver.batch.files import FileStore, StoredFile, check_display_name, check_file_id
from batchgen.fakeserver.batch.resources import new_id, not_found
from batchgen.fakeserver.errors import RpcError, invalid_argument, unknown_field

PROTOCOL = "x-goog-upload-protocol"
COMMAND = "x-goog-upload-command"
OFFSET = "x-goog-upload-offset"
DECLARED_LENGTH = "x-goog-upload-header-content-length"
DECLARED_TYPE = "x-goog-upload-header-content-type"
_UPLOAD_ID_LENGTH = 40
_DEFAULT_MIME = "application/octet-stream"
# The File fields a create may set; output-only ones (sizeBytes, which the SDK sends, and the rest) are
# accepted and ignored, as proto JSON parsing does with output-only fields.
_SETTABLE = frozenset({"name", "displayName", "mimeType"})
_OUTPUT_ONLY = frozenset(
    {"sizeBytes", "createTime", "updateTime", "expirationTime", "sha256Hash", "uri", "downloadUri", "state"}
    | {"source", "error", "videoMetadata"}
)
_COMMANDS = (
    frozenset({"upload"}),
    frozenset({"upload", "finalize"}),
    frozenset({"finalize"}),
    frozenset({"query"}),
    frozenset({"cancel"}),
)


@dataclass(slots=True)
class Session:
    """One resumable upload: what the file will be, and the bytes received so far."""

    upload_id: str
    file_id: str | None
    display_name: str
    mime_type: str
    declared: int | None
    received: bytearray = field(default_factory=bytearray)
    status: str = "active"


class Uploads:
    """Open upload sessions; a finished or cancelled one is forgotten."""

    def __init__(self, config: FilesConfig, store: FileStore, rng: random.Random) -> None:
        self._config = config
        self._store = store
        self._rng = rng
        self._sessions: dict[str, Session] = {}

    def __repr__(self) -> str:
        return f"<Uploads open={len(self._sessions)}>"

    def start(self, headers: Mapping[str, str], payload: Mapping[str, Any]) -> Session:
        """Open a session for a start request, or refuse it (400) as the API would."""
        protocol = headers.get(PROTOCOL, "")
        if protocol.lower() != "resumable":
            raise invalid_argument(
                f"Unsupported upload protocol {protocol or '(none)'!r}: send X-Goog-Upload-Protocol: resumable."
            )
        if headers.get(COMMAND, "").strip().lower() != "start":
            raise invalid_argument("A resumable upload starts with X-Goog-Upload-Command: start.")
        metadata = _file_metadata(payload)
        declared = _declared_length(headers.get(DECLARED_LENGTH))
        if declared is not None and declared > self._config.size_limit:
            raise _too_large(self._config.size_limit)
        file_id = _requested_id(metadata.get("name"))
        if file_id is not None and self._store.exists(file_id):
            raise RpcError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        mime_type = metadata.get("mimeType") or headers.get(DECLARED_TYPE) or _DEFAULT_MIME
        session = Session(self._fresh_id(), file_id, metadata.get("displayName", ""), mime_type, declared)
        self._sessions[session.upload_id] = session
        return session

    def get(self, upload_id: str) -> Session:
        session = self._sessions.get(upload_id)
        if session is None:
            raise not_found(f"Upload session {upload_id} was not found, or has already ended.")
        return session

    def room(self, session: Session) -> int:
        """Bytes the session may still receive before the size limit."""
        return self._config.size_limit - len(session.received)

    def command(self, session: Session, command: str, offset: str | None, chunk: bytes) -> StoredFile | None:
        """Apply one session request; returns the stored file once the upload is finalized."""
        words = frozenset(word.strip().lower() for word in command.split(","))
        if words not in _COMMANDS:
            raise invalid_argument(f"Unknown X-Goog-Upload-Command {command!r}.")
        if words == {"cancel"}:
            self._end(session, "cancelled")
            return None
        if "upload" in words:
            self._append(session, offset, chunk, last="finalize" in words)
        return self._finish(session) if "finalize" in words else None

    def _append(self, session: Session, offset: str | None, chunk: bytes, *, last: bool) -> None:
        if offset is None or not offset.strip().isdigit():
            raise invalid_argument("An upload command needs X-Goog-Upload-Offset, the bytes received so far.")
        if int(offset) != len(session.received):
            raise invalid_argument(
                f"X-Goog-Upload-Offset {offset} does not match the {len(session.received)} bytes received; "
                "query the session and resume from there."
            )
        granularity = self._config.upload_granularity
        if not last and granularity and len(chunk) % granularity:
            raise invalid_argument(f"A chunk that is not the last must be a multiple of {granularity} bytes.")
        if len(chunk) > self.room(session):
            self._end(session, "cancelled")
            raise _too_large(self._config.size_limit)
        session.received += chunk

    def _finish(self, session: Session) -> StoredFile:
        size = len(session.received)
        if session.declared is not None and size != session.declared:
            self._end(session, "cancelled")
            raise invalid_argument(
                f"The upload has {size} bytes but X-Goog-Upload-Header-Content-Length said {session.declared}."
            )
        stored = self._store.add(
            bytes(session.received),
            mime_type=session.mime_type,
            display_name=session.display_name,
            file_id=session.file_id,
            source="UPLOADED",
        )
        self._end(session, "final")
        return stored

    def _end(self, session: Session, status: str) -> None:
        session.status = status
        self._sessions.pop(session.upload_id, None)

    def _fresh_id(self) -> str:
        while True:
            upload_id = new_id(self._rng, _UPLOAD_ID_LENGTH)
            if upload_id not in self._sessions:
                return upload_id


def _file_metadata(payload: Mapping[str, Any]) -> dict[str, str]:
    for key in payload:
        if key != "file":
            raise unknown_field(key)
    raw = payload.get("file") or {}
    if not isinstance(raw, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object for 'file'.")
    metadata = {}
    for key, value in raw.items():
        camel = _camel(key)
        if camel in _OUTPUT_ONLY:
            continue
        if camel not in _SETTABLE:
            raise unknown_field(key, "file")
        if not isinstance(value, str):
            raise invalid_argument(f"Invalid value at 'file.{key}' (TYPE_STRING), {value!r}")
        metadata[camel] = value
    check_display_name(metadata.get("displayName", ""))
    return metadata


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _requested_id(name: str | None) -> str | None:
    if not name:
        return None
    file_id = name.removeprefix("files/")
    check_file_id(file_id)
    return file_id


def _declared_length(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise invalid_argument(f"X-Goog-Upload-Header-Content-Length must be a byte count, got {value!r}.")
    return int(value)


def _too_large(limit: int) -> RpcError:
    return invalid_argument(f"The file exceeds the maximum allowed size of {limit} bytes.")
