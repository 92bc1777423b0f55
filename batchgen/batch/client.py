"""Edge: the Files and Batch APIs over one aiohttp session: upload a job's input file, create, get, find and
cancel batch jobs, download a results file, delete files.

Paths are the SDK's (`files.py`, `batches.py`): `upload/v1beta/files` (Google's resumable upload protocol,
as `_api_client.py` drives it), `v1beta/models/{model}:batchGenerateContent`, `v1beta/batches/{id}` and
`:cancel`, `download/v1beta/files/{id}:download?alt=media`. Every call is retried under the injected `Retry`
(the online carrier's policy); every aiohttp error and HTTP error answer is mapped to the `errors` tree here,
with the API key redacted, and nothing from aiohttp escapes this module.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
import orjson

from batchgen.errors import ApiError, MalformedResponse, OutputError, TransportError, Unreachable
from batchgen.gemini.batch import INPUT_MIME_TYPE, Operation, create_body, file_name, parse_operation, parse_operations
from batchgen.gemini.errors import error_from_response
from batchgen.gemini.response import decode_json
from batchgen.secret import ApiKey

T = TypeVar("T")
# Upload chunks: the SDK's 8 MiB, rounded up to the server's granularity when it names one.
CHUNK_BYTES = 8 * 1024 * 1024
# Pages of `batches.list` searched for a job by its display name (newest first, 100 a page).
FIND_PAGES = 20
_DOWNLOAD_BLOCK = 1024 * 1024


class Retry(Protocol):
    """Calls `attempt(n)` for n = 1, 2, ... until it returns or fails for good (`online.retry.Retrier`)."""

    async def call(self, attempt: Callable[[int], Awaitable[T]]) -> T: ...


class BatchClient:
    """The Files and Batch APIs of one endpoint; an async context manager owning the session."""

    def __init__(
        self,
        base_url: str,
        model: str,
        key: ApiKey,
        *,
        retry: Retry,
        auth: str = "x-goog-api-key",
        timeout_s: float = 120.0,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._root = base_url.rstrip("/").removesuffix("/v1beta")
        self._model = model.removeprefix("models/")
        self._key = key
        self._retry = retry
        self._timeout_s = timeout_s
        self._chunk_bytes = chunk_bytes
        self._headers = (
            {"Authorization": f"Bearer {key.reveal()}"} if auth == "bearer" else {"x-goog-api-key": key.reveal()}
        )
        self._session: aiohttp.ClientSession | None = None
        # Whether the API ever answered: until it has, a connection that cannot be made means a wrong base_url
        # or a server that is down, which no retry mends.
        self._answered = False

    async def __aenter__(self) -> Self:
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"BatchClient({self._root!r}, model={self._model!r}, key={self._key!r})"

    # --- the Batch API ---------------------------------------------------------------------------------------

    async def create(self, display_name: str, input_file: str) -> Operation:
        """Create a batch job over an uploaded input file; its operation (PENDING).

        One attempt, never retried here: after an answer lost on the way back a retry would make a second job.
        The caller looks the job up by its display name (`find`) before creating it again.
        """
        url = f"{self._root}/v1beta/models/{self._model}:batchGenerateContent"
        return parse_operation(await self._once("POST", url, create_body(display_name, input_file)))

    async def get(self, name: str) -> Operation:
        """A job's operation as it stands (`name` is `batches/...`)."""
        return parse_operation(await self._call("GET", f"{self._root}/v1beta/{name}"))

    async def find(self, display_name: str) -> Operation | None:
        """The newest job named `display_name` among the newest `FIND_PAGES` pages of jobs; None when none is."""
        token: str | None = None
        for _ in range(FIND_PAGES):
            query = "pageSize=100" + (f"&pageToken={token}" if token else "")
            operations, token = parse_operations(await self._call("GET", f"{self._root}/v1beta/batches?{query}"))
            found = next((op for op in operations if op.display_name == display_name), None)
            if found is not None or token is None:
                return found
        return None

    async def cancel(self, name: str) -> None:
        """Ask for a job to be cancelled (it may end otherwise before it is)."""
        await self._call("POST", f"{self._root}/v1beta/{name}:cancel", b"{}")

    # --- the Files API ---------------------------------------------------------------------------------------

    async def upload(self, path: Path, display_name: str) -> str:
        """Upload a JSONL input file with the resumable protocol; its name (`files/...`).

        Each chunk is retried from where the server says the upload stands (`query`), so a dropped connection
        costs one chunk, not the file.
        """
        size = (await anyio.Path(path).stat()).st_size
        session_url, chunk_size = await self._retry.call(lambda _: self._start_upload(size, display_name))
        offset = 0
        while True:
            send = functools.partial(self._send_chunk, session_url, path, offset, size, chunk_size)
            offset, answer = await self._retry.call(send)
            if answer is not None:
                return file_name(answer)

    async def download(self, file: str, destination: Path) -> int:
        """Write a generated file's bytes (a results file) to `destination`; the number of bytes."""
        url = f"{self._root}/download/v1beta/{file}:download?alt=media"
        return await self._retry.call(lambda _: self._download(url, destination))

    async def delete_file(self, file: str) -> None:
        """Delete a file; one attempt (a file left behind is deleted by the Files API after 48 h anyway)."""
        await self._once("DELETE", f"{self._root}/v1beta/{file}", None)

    # --- HTTP ------------------------------------------------------------------------------------------------

    async def _call(self, method: str, url: str, body: bytes | None = None) -> Any:
        return await self._retry.call(lambda _: self._once(method, url, body))

    async def _once(self, method: str, url: str, body: bytes | None) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else None
        async with self._mapped() as session, session.request(method, url, data=body, headers=headers) as response:
            payload = await response.read()
            self._answered = True
            if response.status != 200:
                raise error_from_response(response.status, payload, response.headers.get("Retry-After"))
            return decode_json(payload) if payload else {}

    async def _start_upload(self, size: int, display_name: str) -> tuple[str, int]:
        url = f"{self._root}/upload/v1beta/files"
        headers = {
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(size),
            "X-Goog-Upload-Header-Content-Type": "application/jsonl",
            "Content-Type": "application/json",
        }
        body = orjson.dumps({"file": {"displayName": display_name, "mimeType": INPUT_MIME_TYPE}})
        async with self._mapped() as session, session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            self._answered = True
            if response.status != 200:
                raise error_from_response(response.status, payload, response.headers.get("Retry-After"))
            session_url = response.headers.get("X-Goog-Upload-URL")
            granularity = response.headers.get("X-Goog-Upload-Chunk-Granularity", "")
        if not session_url:
            raise MalformedResponse("the Files API started an upload without an X-Goog-Upload-URL")
        step = int(granularity) if granularity.isdigit() and int(granularity) > 0 else 1
        return self._on_our_host(session_url), -(-self._chunk_bytes // step) * step

    def _on_our_host(self, url: str) -> str:
        # As the SDK does: the session URL's host replaced by the configured one, so a proxy in front of the
        # API (or a local server) keeps receiving the upload.
        root = urlsplit(self._root)
        return urlunsplit(urlsplit(url)._replace(scheme=root.scheme, netloc=root.netloc))

    async def _send_chunk(
        self, url: str, path: Path, offset: int, size: int, chunk_size: int, attempt: int
    ) -> tuple[int, Mapping[str, Any] | None]:
        """One chunk from `offset` (after a failed attempt, from where the server says it stands); the offset
        after it, and the File once the upload is final."""
        if attempt > 1:
            offset = await self._received(url)
        chunk = await anyio.to_thread.run_sync(_read_at, path, offset, chunk_size)
        last = offset + len(chunk) >= size
        headers = {
            "X-Goog-Upload-Command": "upload, finalize" if last else "upload",
            "X-Goog-Upload-Offset": str(offset),
        }
        async with self._mapped() as session, session.post(url, data=chunk, headers=headers) as response:
            payload = await response.read()
            if response.status != 200:
                raise error_from_response(response.status, payload, response.headers.get("Retry-After"))
            final = response.headers.get("X-Goog-Upload-Status") == "final"
        if last and not final:
            raise MalformedResponse("the Files API did not finalize the upload after its last chunk")
        return offset + len(chunk), decode_json(payload) if final else None

    async def _received(self, url: str) -> int:
        headers = {"X-Goog-Upload-Command": "query"}
        async with self._mapped() as session, session.post(url, headers=headers) as response:
            await response.read()
            received = response.headers.get("X-Goog-Upload-Size-Received", "")
            if response.status != 200 or not received.isdigit():
                raise TransportError("the upload session cannot say where it stands; starting it again is needed")
            return int(received)

    async def _download(self, url: str, destination: Path) -> int:
        written = 0
        # A results file can be gigabytes: the session's total timeout would cut it, so only a stall is timed.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self._timeout_s)
        async with self._mapped() as session, session.get(url, timeout=timeout) as response:
            if response.status != 200:
                payload = await response.read()
                raise error_from_response(response.status, payload, response.headers.get("Retry-After"))
            with _opened(destination) as sink:
                async for block in response.content.iter_chunked(_DOWNLOAD_BLOCK):
                    _write(sink, block, destination)
                    written += len(block)
        return written

    @asynccontextmanager
    async def _mapped(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The session, with every error of the call made inside mapped to the `errors` tree."""
        if self._session is None:
            raise RuntimeError("BatchClient used outside `async with`")
        try:
            yield self._session
        except ApiError as exc:
            clean = self._key.redact(str(exc))
            if clean != str(exc):
                exc.args = (clean,)
            raise
        except TimeoutError as exc:
            raise TransportError(f"no complete answer within {self._timeout_s:g}s") from exc
        except aiohttp.ClientConnectorError as exc:
            # Refused, DNS, TLS: no connection was made at all.
            problem = self._key.redact(f"{type(exc).__name__}: {exc}")
            if not self._answered:
                raise Unreachable(
                    f"no connection to {self._root}: {problem} (is base_url right, and the server up?)"
                ) from exc
            raise TransportError(problem, connect=True) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(self._key.redact(f"{type(exc).__name__}: {exc}")) from exc


def _read_at(path: Path, offset: int, size: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(size)
    except OSError as exc:
        raise OutputError(f"cannot read a batch input file: {exc.strerror or exc}", path=str(path)) from exc


def _opened(path: Path) -> IO[bytes]:
    try:
        return path.open("wb")
    except OSError as exc:
        raise OutputError(f"cannot write a batch results file: {exc.strerror or exc}", path=str(path)) from exc


def _write(sink: IO[bytes], block: bytes, path: Path) -> None:
    try:
        sink.write(block)
    except OSError as exc:
        raise OutputError(f"cannot write a batch results file: {exc.strerror or exc}", path=str(path)) from exc
