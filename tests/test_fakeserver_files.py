"""The fake server's Files API over real HTTP: resumable uploads (whole and in chunks), get, list, delete,
download, and the errors the API answers (protocol, size, names, keys, unknown files)."""

from __future__ import annotations

import base64
import hashlib

import aiohttp
import pytest
from fakebatch import KEY, call, send_chunk, start_upload, stats, upload

from batchgen.fakeserver import FakeServer, FilesConfig, ServerConfig

DATA = b'{"key": "a", "request": {"contents": [{"parts": [{"text": "hi"}]}]}}\n' * 3


def serve(**files: object) -> FakeServer:
    return FakeServer(ServerConfig(api_key=KEY, files=FilesConfig(**files)))  # type: ignore[arg-type]


# --- uploads -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_upload_in_one_request_answers_the_file(session: aiohttp.ClientSession) -> None:
    """start, then "upload, finalize" with the bytes: a File with the live API's fields and values (int64 as a
    string, sha256Hash the base64 of the hex digest, expiry 48 h after creation, URIs on this server)."""
    async with serve() as server:
        file = await upload(session, server.url, DATA, displayName="batch-input", mimeType="jsonl")
        url = server.url
    file_id = file["name"].removeprefix("files/")
    assert len(file_id) == 12 and file_id.isalnum() and file_id.islower()
    assert file["displayName"] == "batch-input" and file["mimeType"] == "jsonl"
    assert file["sizeBytes"] == str(len(DATA))
    assert base64.b64decode(file["sha256Hash"]).decode() == hashlib.sha256(DATA).hexdigest()
    assert (file["state"], file["source"]) == ("ACTIVE", "UPLOADED")
    assert file["uri"] == f"{url}/v1beta/{file['name']}"
    assert "downloadUri" not in file
    assert file["createTime"].endswith("Z") and file["expirationTime"] > file["createTime"]


@pytest.mark.anyio
async def test_chunked_upload_reports_active_then_final(session: aiohttp.ClientSession) -> None:
    """Chunks at increasing offsets: each non-final one is answered `active` with no body; "finalize" alone
    ends the upload, and query reports the bytes received."""
    async with serve(upload_granularity=8) as server:
        url = await start_upload(session, server.url, len(DATA))
        first = await send_chunk(session, url, DATA[:16], 0, "upload")
        second = await send_chunk(session, url, DATA[16:], 16, "upload, finalize")
        _, file = await call(session, "GET", f"{server.url}/v1beta/files", headers={"x-goog-api-key": KEY})
    assert (first.status, first.headers["X-Goog-Upload-Status"]) == (200, "active")
    assert first.headers["X-Goog-Upload-Size-Received"] == "16"
    assert (second.status, second.headers["X-Goog-Upload-Status"]) == (200, "final")
    assert file["files"][0]["sizeBytes"] == str(len(DATA))


@pytest.mark.anyio
async def test_wrong_offset_is_refused_and_the_upload_resumes(session: aiohttp.ClientSession) -> None:
    """A chunk at the wrong offset is 400 with the session still active; query tells where to resume."""
    async with serve(upload_granularity=0) as server:
        url = await start_upload(session, server.url, len(DATA))
        await send_chunk(session, url, DATA[:10], 0, "upload")
        wrong = await send_chunk(session, url, DATA[10:], 5, "upload, finalize")
        query = await send_chunk(session, url, b"", 0, "query")
        done = await send_chunk(session, url, DATA[10:], 10, "upload, finalize")
    assert (wrong.status, wrong.headers["X-Goog-Upload-Status"]) == (400, "active")
    assert query.headers["X-Goog-Upload-Size-Received"] == "10"
    assert (done.status, done.headers["X-Goog-Upload-Status"]) == (200, "final")


@pytest.mark.anyio
async def test_chunks_must_match_the_granularity(session: aiohttp.ClientSession) -> None:
    """A non-final chunk that is not a multiple of the granularity (sent at start) is refused; the last may be
    any size."""
    async with (
        serve(upload_granularity=8) as server,
        session.post(
            f"{server.url}/upload/v1beta/files",
            headers={"x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
        ) as started,
    ):
        url = started.headers["X-Goog-Upload-URL"]
        odd = await send_chunk(session, url, DATA[:5], 0, "upload")
        last = await send_chunk(session, url, DATA[:5], 0, "upload, finalize")
    assert started.headers["X-Goog-Upload-Chunk-Granularity"] == "8"
    assert odd.status == 400
    assert last.status == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("declared", "sent", "where"),
    [pytest.param(101, b"", "start", id="declared-at-start"), pytest.param(None, b"x" * 101, "upload", id="sent")],
)
async def test_size_limit_is_a_400(
    session: aiohttp.ClientSession, declared: int | None, sent: bytes, where: str
) -> None:
    """A file over the size limit is refused with 400 INVALID_ARGUMENT, when declared or when sent."""
    async with serve(size_limit=100, upload_granularity=0) as server:
        headers = {"x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"}
        if declared is not None:
            headers["X-Goog-Upload-Header-Content-Length"] = str(declared)
        async with session.post(f"{server.url}/upload/v1beta/files", headers=headers) as started:
            start_status = started.status
            url = started.headers.get("X-Goog-Upload-URL")
        if where == "start":
            assert start_status == 400
            return
        assert url is not None
        response = await send_chunk(session, url, sent, 0)
    assert response.status == 400
    assert response.headers["X-Goog-Upload-Status"] == "cancelled"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Goog-Upload-Command": "start"}, id="no-protocol"),
        pytest.param({"X-Goog-Upload-Protocol": "multipart", "X-Goog-Upload-Command": "start"}, id="multipart"),
        pytest.param({"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "upload"}, id="no-start"),
    ],
)
async def test_bad_upload_protocol_is_400(session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
    """Only a resumable start opens an upload; anything else is 400 INVALID_ARGUMENT."""
    async with serve() as server:
        status, body = await call(
            session, "POST", f"{server.url}/upload/v1beta/files", {}, headers={"x-goog-api-key": KEY, **headers}
        )
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.anyio
async def test_a_chosen_name_is_kept_and_may_not_be_taken_twice(session: aiohttp.ClientSession) -> None:
    """`file.name` picks the id; a second upload under the same name is 409 ALREADY_EXISTS, a bad name 400."""
    async with serve() as server:
        file = await upload(session, server.url, DATA, name="files/my-input-1", mimeType="application/jsonl")
        taken = await call(
            session,
            "POST",
            f"{server.url}/upload/v1beta/files",
            {"file": {"name": "files/my-input-1"}},
            headers={"x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
        )
        bad = await call(
            session,
            "POST",
            f"{server.url}/upload/v1beta/files",
            {"file": {"name": "files/-Bad_Name"}},
            headers={"x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
        )
    assert file["name"] == "files/my-input-1"
    assert taken[0] == 409 and taken[1]["error"]["status"] == "ALREADY_EXISTS"
    assert bad[0] == 400


@pytest.mark.anyio
async def test_an_ended_session_is_gone(session: aiohttp.ClientSession) -> None:
    """After finalize or cancel the session URL answers 404, still with an upload status (so the SDK does not
    resend the chunk)."""
    async with serve(upload_granularity=0) as server:
        url = await start_upload(session, server.url, None)
        cancelled = await send_chunk(session, url, b"", 0, "cancel")
        again = await send_chunk(session, url, DATA, 0)
    assert cancelled.headers["X-Goog-Upload-Status"] == "cancelled"
    assert again.status == 404 and again.headers["X-Goog-Upload-Status"] == "final"


# --- get, list, delete, download ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_list_and_delete(session: aiohttp.ClientSession) -> None:
    """A file reads back as uploaded; the list pages newest first with nextPageToken; a deleted file is gone
    and an empty list is {}."""
    headers = {"x-goog-api-key": KEY}
    async with serve() as server:
        files = [await upload(session, server.url, DATA + bytes([i])) for i in range(3)]
        got = await call(session, "GET", f"{server.url}/v1beta/{files[0]['name']}", headers=headers)
        first = await call(session, "GET", f"{server.url}/v1beta/files?pageSize=2", headers=headers)
        token = first[1]["nextPageToken"]
        second = await call(session, "GET", f"{server.url}/v1beta/files?pageSize=2&pageToken={token}", headers=headers)
        for file in files:
            assert (await call(session, "DELETE", f"{server.url}/v1beta/{file['name']}", headers=headers)) == (200, {})
        empty = await call(session, "GET", f"{server.url}/v1beta/files", headers=headers)
        ledger = await stats(session, server.url)
    assert got == (200, files[0])
    assert [f["name"] for f in first[1]["files"]] == [files[2]["name"], files[1]["name"]]
    assert [f["name"] for f in second[1]["files"]] == [files[0]["name"]] and "nextPageToken" not in second[1]
    assert empty == (200, {})
    assert ledger["files"]["uploaded"] == 3 and ledger["files"]["deleted"] == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "rpc"), [pytest.param(403, "PERMISSION_DENIED", id="403"), pytest.param(404, "NOT_FOUND", id="404")]
)
async def test_unknown_file_is_403_like_the_live_api_or_404(
    session: aiohttp.ClientSession, status: int, rpc: str
) -> None:
    """An unknown file: 403 PERMISSION_DENIED "...or it may not exist" by default (the live answer), or 404."""
    async with serve(missing_status=status) as server:
        got = await call(session, "GET", f"{server.url}/v1beta/files/nosuchfile", headers={"x-goog-api-key": KEY})
        deleted = await call(
            session, "DELETE", f"{server.url}/v1beta/files/nosuchfile", headers={"x-goog-api-key": KEY}
        )
    assert got[0] == deleted[0] == status
    assert got[1]["error"]["status"] == rpc


@pytest.mark.anyio
async def test_uploaded_files_download_only_when_allowed(session: aiohttp.ClientSession) -> None:
    """The API serves only generated files, so an uploaded one is 400 by default; with download_uploads the
    bytes come back unchanged, on the SDK's path and the REST docs' path, and the ledger counts them."""
    headers = {"x-goog-api-key": KEY}
    async with serve() as server:
        file = await upload(session, server.url, DATA)
        refused = await call(session, "GET", f"{server.url}/v1beta/{file['name']}:download?alt=media", headers=headers)
    assert refused[0] == 400
    async with serve(download_uploads=True) as server:
        file = await upload(session, server.url, DATA)
        async with session.get(f"{server.url}/v1beta/{file['name']}:download?alt=media", headers=headers) as response:
            sdk_path = await response.read()
        async with session.get(
            f"{server.url}/download/v1beta/{file['name']}:download?alt=media", headers=headers
        ) as response:
            docs_path = await response.read()
        without_media = await call(session, "GET", f"{server.url}/v1beta/{file['name']}:download", headers=headers)
        ledger = await stats(session, server.url)
    assert sdk_path == docs_path == DATA
    assert without_media == (200, {})
    assert ledger["files"]["downloads"] == 2 and ledger["files"]["downloaded_bytes"] == 2 * len(DATA)


# --- keys --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [pytest.param({}, 403, id="no-key"), pytest.param({"x-goog-api-key": "wrong"}, 400, id="wrong-key")],
)
async def test_files_need_the_key_but_the_session_url_does_not(
    session: aiohttp.ClientSession, headers: dict[str, str], status: int
) -> None:
    """Start, get, list and download check the key as generate does; chunks sent to the session URL carry
    none (the SDK sends none) and are accepted."""
    async with serve(upload_granularity=0) as server:
        start = await call(
            session,
            "POST",
            f"{server.url}/upload/v1beta/files",
            {},
            headers={**headers, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
        )
        listed = await call(session, "GET", f"{server.url}/v1beta/files", headers=headers)
        url = await start_upload(session, server.url, len(DATA))
        chunk = await send_chunk(session, url, DATA, 0)
    assert start[0] == listed[0] == status
    assert chunk.status == 200
