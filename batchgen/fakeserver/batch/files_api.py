"""The Files API routes: resumable upload, get, list, delete and download (paths as Google's).

    POST   /upload/v1beta/files                        start a resumable upload (see `upload`)
    POST   /upload/v1beta/files?upload_id=...          a session's upload / finalize / query / cancel
    GET    /v1beta/files                               {"files": [...], "nextPageToken"}; {} when empty
    GET    /v1beta/files/{id}                          the File
    DELETE /v1beta/files/{id}                          {}
    GET    /v1beta/files/{id}:download?alt=media       the bytes (the SDK's `files.download` path)
    GET    /download/v1beta/files/{id}:download?alt=media   the same (the REST docs' and `downloadUri`'s path)

Paths come from the SDK (`files.py`: `upload/{api_version}/files`, `files/{file}`, `files/{name}:download`
with `alt=media`) and file_service.proto. Without `alt=media` a download answers the empty
DownloadFileResponse, `{}`.
"""

from __future__ import annotations

from aiohttp import web

from batchgen.fakeserver.batch.config import FilesConfig
from batchgen.fakeserver.batch.files import FileStore, StoredFile
from batchgen.fakeserver.batch.http import Routes, error_response, json_response, origin, read_json, read_limited
from batchgen.fakeserver.batch.ledger import BatchLedger
from batchgen.fakeserver.batch.resources import PageRequest
from batchgen.fakeserver.batch.upload import COMMAND, OFFSET, Session, Uploads
from batchgen.fakeserver.errors import RpcError, invalid_argument

UPLOAD_STATUS = "X-Goog-Upload-Status"
_OCTETS = "application/octet-stream"


class FilesApi:
    """The Files API over a `FileStore`; uploads go through `Uploads`."""

    def __init__(
        self, config: FilesConfig, store: FileStore, uploads: Uploads, ledger: BatchLedger, routes: Routes
    ) -> None:
        self._config = config
        self._store = store
        self._uploads = uploads
        self._ledger = ledger
        self._routes = routes

    def __repr__(self) -> str:
        return f"<FilesApi {self._store!r} {self._uploads!r}>"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        counted = self._routes.counted
        # The session URL is its own credential, so uploads check the key only when they start.
        router.add_post("/upload/v1beta/files", counted("files.upload", self.upload, auth=False))
        router.add_get("/v1beta/files", counted("files.list", self.list))
        download = counted("files.download", self.download)
        router.add_get("/v1beta/files/{file:[^/:]+}:download", download)
        router.add_get("/download/v1beta/files/{file:[^/:]+}:download", download)
        router.add_get("/v1beta/files/{file:[^/:]+}", counted("files.get", self.get))
        router.add_delete("/v1beta/files/{file:[^/:]+}", counted("files.delete", self.delete))

    async def upload(self, request: web.Request) -> web.StreamResponse:
        upload_id = request.query.get("upload_id")
        if upload_id is not None:
            return await self._continue(request, upload_id)
        self._routes.authenticate(request)
        session = self._uploads.start(request.headers, await read_json(request))
        url = f"{origin(request)}/upload/v1beta/files?upload_id={session.upload_id}&upload_protocol=resumable"
        headers = {"X-Goog-Upload-URL": url, UPLOAD_STATUS: session.status}
        if self._config.upload_granularity:
            headers["X-Goog-Upload-Chunk-Granularity"] = str(self._config.upload_granularity)
        return web.Response(status=200, headers=headers)

    async def _continue(self, request: web.Request, upload_id: str) -> web.StreamResponse:
        try:
            session = self._uploads.get(upload_id)
        except RpcError as error:
            return error_response(error, {UPLOAD_STATUS: "final"})
        try:
            stored = await self._command(request, session)
        except RpcError as error:
            return error_response(error, {UPLOAD_STATUS: session.status})
        headers = {UPLOAD_STATUS: session.status}
        if stored is None:
            headers["X-Goog-Upload-Size-Received"] = str(len(session.received))
            return web.Response(status=200, headers=headers)
        self._ledger.files["uploaded"] += 1
        self._ledger.files["uploaded_bytes"] += len(stored.data)
        return json_response({"file": stored.to_json(origin(request))}, headers)

    async def _command(self, request: web.Request, session: Session) -> StoredFile | None:
        # One byte past the room left is enough to tell that the chunk is too big.
        chunk = await read_limited(request, self._uploads.room(session) + 1)
        return self._uploads.command(session, request.headers.get(COMMAND, ""), request.headers.get(OFFSET), chunk)

    async def list(self, request: web.Request) -> web.StreamResponse:
        files, token = self._store.page(PageRequest.from_query(request.query))
        body: dict[str, object] = {}
        if files:
            body["files"] = [stored.to_json(origin(request)) for stored in files]
        if token:
            body["nextPageToken"] = token
        return json_response(body)

    async def get(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._store.get(request.match_info["file"]).to_json(origin(request)))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        self._store.delete(request.match_info["file"])
        self._ledger.files["deleted"] += 1
        return json_response({})

    async def download(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file"]
        stored = self._store.get(file_id)
        if not (stored.generated or self._config.download_uploads):
            raise invalid_argument(
                f"Only generated files can be downloaded; files/{file_id} was uploaded (its source is UPLOADED)."
            )
        if request.query.get("alt") != "media":
            return json_response({})
        self._ledger.files["downloads"] += 1
        self._ledger.files["downloaded_bytes"] += len(stored.data)
        content_type = stored.mime_type if "/" in stored.mime_type else _OCTETS
        return web.Response(status=200, body=stored.data, content_type=content_type)
