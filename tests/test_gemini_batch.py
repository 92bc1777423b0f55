"""The Batch API's wire format read and written as pure functions: input lines, operations, results lines."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchgen.errors import MalformedResponse, RateLimited, RequestRejected, ServerError
from batchgen.gemini.batch import (
    create_body,
    file_name,
    parse_operation,
    parse_operations,
    parse_result_line,
    request_line,
)
from batchgen.gemini.request import RequestTemplate, user_contents

RESPONSE = {"candidates": [{"content": {"parts": [{"text": "hi"}]}}], "usageMetadata": {"promptTokenCount": 3}}


def test_an_input_line_carries_the_online_request_body_byte_for_byte() -> None:
    """The line's request is the very body an online call would send, so both get the same answer."""
    body = RequestTemplate({"generationConfig": {"temperature": 0.0}}).render(user_contents('say "hi"'))
    line = request_line("r-1", body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = orjson.loads(line)
    assert decoded["key"] == "r-1"
    assert orjson.dumps(decoded["request"]) == body


def test_the_create_body_names_the_uploaded_file() -> None:
    assert orjson.loads(create_body("batchgen job", "files/abc")) == {
        "batch": {"displayName": "batchgen job", "inputConfig": {"fileName": "files/abc"}}
    }


@pytest.mark.parametrize("answer", [{"file": {"name": "files/x1"}}, {"name": "files/x1"}])
def test_an_uploaded_files_name_is_read_from_either_shape(answer: dict[str, Any]) -> None:
    assert file_name(answer) == "files/x1"


def test_a_files_answer_without_a_name_is_malformed() -> None:
    with pytest.raises(MalformedResponse):
        file_name({"file": {}})


# --- results lines ---------------------------------------------------------------------------------------------


def line(value: Any) -> bytes:
    return orjson.dumps(value)


def test_a_line_with_a_response_is_answered() -> None:
    read = parse_result_line(line({"response": RESPONSE, "key": "a"}))
    assert read.key == "a" and read.response == RESPONSE and read.error is None


@pytest.mark.parametrize(
    ("value", "kind", "http", "status"),
    [
        pytest.param(
            {"key": "a", "error": {"code": 500, "message": "boom", "status": "INTERNAL"}},
            ServerError,
            500,
            "INTERNAL",
            id="error-http-code",
        ),
        pytest.param({"key": "a", "status": {"code": 13, "message": "boom"}}, ServerError, 500, "INTERNAL", id="rpc"),
        pytest.param(
            {"key": "a", "status": {"code": 8, "message": "boom"}}, RateLimited, 429, "RESOURCE_EXHAUSTED", id="rpc-429"
        ),
        pytest.param(
            {"key": "a", "response": None, "error": {"code": 3, "message": "boom"}},
            RequestRejected,
            400,
            "INVALID_ARGUMENT",
            id="null-response",
        ),
    ],
)
def test_a_failed_line_in_either_shape_becomes_the_error_of_that_status(
    value: dict[str, Any], kind: type[Exception], http: int, status: str
) -> None:
    """`error` with an HTTP code, or `status` with a gRPC code: the same error an online answer would be."""
    read = parse_result_line(line(value))
    assert read.key == "a" and read.response is None
    assert isinstance(read.error, kind)
    assert (read.error.http_status, read.error.status) == (http, status)
    assert "batch line: boom" in str(read.error)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(line({"key": "a"}), id="neither"),
        pytest.param(line({"key": "a", "response": "text"}), id="response-not-an-object"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(line(["a"]), id="not-an-object"),
    ],
)
def test_a_line_without_a_usable_response_is_failed(raw: bytes) -> None:
    read = parse_result_line(raw)
    assert read.response is None and isinstance(read.error, MalformedResponse)


def test_a_numeric_key_reads_as_text_and_a_missing_one_as_none() -> None:
    assert parse_result_line(line({"key": 7, "response": RESPONSE})).key == "7"
    assert parse_result_line(line({"response": RESPONSE})).key is None


# --- operations ------------------------------------------------------------------------------------------------

PENDING = {
    "name": "batches/abc",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-2.5-flash",
        "displayName": "batchgen x s00001",
        "inputConfig": {"fileName": "files/in1"},
        "createTime": "2026-01-06T11:09:11.943530657Z",
        "batchStats": {"requestCount": "5", "pendingRequestCount": "5"},
        "state": "BATCH_STATE_PENDING",
        "name": "batches/abc",
    },
}


def test_a_new_job_is_pending_with_its_counts_as_numbers() -> None:
    operation = parse_operation(PENDING)
    assert (operation.name, operation.state, operation.terminal) == ("batches/abc", "PENDING", False)
    assert operation.display_name == "batchgen x s00001"
    assert operation.counts == {"requestCount": 5, "pendingRequestCount": 5}
    assert operation.create_time == "2026-01-06T11:09:11.943530657Z"
    assert operation.responses_file is None and operation.error is None


def test_a_succeeded_job_names_its_results_file() -> None:
    data = {
        **PENDING,
        "metadata": {**PENDING["metadata"], "state": "BATCH_STATE_SUCCEEDED"},  # type: ignore[dict-item]
        "done": True,
        "response": {"responsesFile": "files/batch-abc"},
    }
    operation = parse_operation(data)
    assert operation.state == "SUCCEEDED" and operation.terminal and operation.responses_file == "files/batch-abc"


def test_a_failed_job_carries_its_error_and_sdk_state_names_read_the_same() -> None:
    data = {
        "name": "batches/abc",
        "metadata": {"state": "JOB_STATE_FAILED"},
        "done": True,
        "error": {"code": 13, "message": "The batch failed"},
    }
    operation = parse_operation(data)
    assert operation.state == "FAILED" and operation.terminal
    assert operation.error == "INTERNAL: The batch failed"


def test_an_answer_without_a_name_is_not_an_operation() -> None:
    with pytest.raises(MalformedResponse):
        parse_operation({"metadata": {}})


def test_a_list_page_reads_its_operations_and_the_next_token() -> None:
    operations, token = parse_operations({"operations": [PENDING, {"bad": 1}], "nextPageToken": "t2"})
    assert [op.name for op in operations] == ["batches/abc"] and token == "t2"
    assert parse_operations({}) == ([], None)
