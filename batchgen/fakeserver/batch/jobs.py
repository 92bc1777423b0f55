"""A batch job: its state, counts and output, and the long-running operation the API shows for it.

The operation as the live API returns it (captures in MaxiDonkey/DelphiGemini guides/further-batch.md and
several clients' fixtures; the SDK reads it in `_BatchJob_from_mldev`):

    {"name": "batches/o08hk76gv328ihxcssjsgwt3g6omtfysxi46",
     "metadata": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                  "model": "models/gemini-2.5-flash", "displayName": "...",
                  "inputConfig": {"fileName": "files/frh6ua11nk3o"},            (file input only)
                  "output": {"responsesFile": "files/batch-<id>"}               (once delivered; inline:
                            | {"inlinedResponses": {"inlinedResponses": [...]}},  in input order)
                  "createTime": "...", "endTime": "..." (once ended), "updateTime": "...",
                  "batchStats": {"requestCount": "2", "successfulRequestCount": "2"},
                  "state": "BATCH_STATE_SUCCEEDED", "name": "batches/<id>"},
     "done": true,
     "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
                  "responsesFile": "files/batch-<id>"}}

`batchStats` counts are int64 strings and zero counts are left out, as proto JSON does (a new job shows
requestCount and pendingRequestCount only). `done` is left out until the operation has a result. A job that
ends FAILED, CANCELLED or EXPIRED is done at once with a top-level `error` (a google.rpc.Status) and no
`response`: "cancel is instant-terminal" (tobert/kaibo PR #8, probed). Lines left out of the output on
purpose ("missing") count as successful: the API does not know it lost them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchgen.fakeserver.batch.answers import Result
from batchgen.fakeserver.batch.lines import BatchInput
from batchgen.fakeserver.batch.resources import int64, rpc_status, timestamp
from batchgen.fakeserver.errors import RpcError

PENDING = "BATCH_STATE_PENDING"
RUNNING = "BATCH_STATE_RUNNING"
SUCCEEDED = "BATCH_STATE_SUCCEEDED"
FAILED = "BATCH_STATE_FAILED"
CANCELLED = "BATCH_STATE_CANCELLED"
EXPIRED = "BATCH_STATE_EXPIRED"
ACTIVE = frozenset({PENDING, RUNNING})
BATCH_ID_LENGTH = 36
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."


@dataclass(slots=True)
class BatchJob:
    """One job. `number` counts jobs on this server (it orders listings and seeds the job's draws)."""

    batch_id: str
    number: int
    model: str
    spec: BatchInput
    created_ns: int
    updated_ns: int
    state: str = PENDING
    ended_ns: int | None = None
    results: list[Result] = field(default_factory=list)
    output: dict[str, Any] | None = None
    error: RpcError | None = None

    def __repr__(self) -> str:
        return f"<BatchJob {self.name} {self.state} {len(self.results)}/{len(self.spec.lines)}>"

    @property
    def name(self) -> str:
        return f"batches/{self.batch_id}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def move(self, state: str, now_ns: int) -> None:
        """Enter `state`; a state other than PENDING or RUNNING ends the job."""
        self.state = state
        self.updated_ns = now_ns
        if state not in ACTIVE:
            self.ended_ns = now_ns

    def to_json(self) -> dict[str, Any]:
        """The operation object for get, list and create."""
        operation: dict[str, Any] = {"name": self.name, "metadata": self._metadata()}
        if self.error is not None:
            operation.update(done=True, error=rpc_status(self.error))
        elif self.state == SUCCEEDED and self.output is not None:
            operation.update(done=True, response={"@type": _TYPE + "GenerateContentBatchOutput", **self.output})
        return operation

    def _metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"@type": _TYPE + "GenerateContentBatch", "model": f"models/{self.model}"}
        if self.spec.display_name:
            metadata["displayName"] = self.spec.display_name
        if self.spec.file_name is not None:
            metadata["inputConfig"] = {"fileName": self.spec.file_name}
        if self.output is not None:
            metadata["output"] = self.output
        metadata["createTime"] = timestamp(self.created_ns)
        if self.ended_ns is not None:
            metadata["endTime"] = timestamp(self.ended_ns)
        metadata["updateTime"] = timestamp(self.updated_ns)
        metadata["batchStats"] = self._stats()
        metadata["state"] = self.state
        if self.spec.priority:
            metadata["priority"] = int64(self.spec.priority)
        metadata["name"] = self.name
        return metadata

    def _stats(self) -> dict[str, str]:
        failed = sum(1 for result in self.results if result.outcome == "failed")
        counts = {
            "requestCount": len(self.spec.lines),
            "successfulRequestCount": len(self.results) - failed,
            "failedRequestCount": failed,
            "pendingRequestCount": len(self.spec.lines) - len(self.results),
        }
        return {name: int64(count) for name, count in counts.items() if count}
