"""The wire format: request templates, response parsing, error mapping and SSE decoding."""

from __future__ import annotations

import orjson
import pytest
from conftest import response
from recorded_fixtures import RECORDED, load

from batchgen.errors import (
    AuthError,
    MalformedResponse,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from batchgen.gemini.errors import error_from_response, parse_retry_after
from batchgen.gemini.request import RequestTemplate, user_contents
from batchgen.gemini.response import parse_response
from batchgen.gemini.stream import SseDecoder, merge_stream
from batchgen.records import Usage


def test_template_splices_contents_into_the_serialised_request() -> None:
    """Only `contents` changes per row; the rest of the body is the job's request, unchanged."""
    template = RequestTemplate({"generationConfig": {"temperature": 0}, "systemInstruction": {"parts": []}})
    body = orjson.loads(template.render(user_contents("hi")))
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"temperature": 0},
        "systemInstruction": {"parts": []},
    }
    assert orjson.loads(RequestTemplate({}).render(b"[]")) == {"contents": []}


def test_template_with_generation_config_overrides_one_field() -> None:
    template = RequestTemplate({"generationConfig": {"temperature": 0, "maxOutputTokens": 10}})
    raised = template.with_generation_config(maxOutputTokens=100)
    assert raised.request["generationConfig"] == {"temperature": 0, "maxOutputTokens": 100}
    assert template.request["generationConfig"]["maxOutputTokens"] == 10


def test_token_estimate_counts_contents_and_the_fixed_request() -> None:
    small = RequestTemplate({})
    big = RequestTemplate({"systemInstruction": {"parts": [{"text": "x" * 400}]}})
    contents = user_contents("y" * 400)
    assert small.estimate_tokens(contents) >= 100
    assert big.estimate_tokens(contents) >= small.estimate_tokens(contents) + 100


def test_parse_excludes_thoughts_from_text_and_reads_usage() -> None:
    """Thought summaries go to `thoughts`; missing usage fields inside usageMetadata are 0."""
    reply = parse_response(
        response("answer", thought="thinking...", usage={"promptTokenCount": 3, "totalTokenCount": 9})
    )
    assert reply.text == "answer"
    assert reply.thoughts == "thinking..."
    assert reply.usage == Usage(prompt=3, candidates=0, thoughts=0, cached=0, tool_use=0, total=9)
    assert reply.finish_reason == "STOP"
    assert reply.model_version == "gemini-2.5-flash"


def test_parse_blocked_prompt_has_no_candidates() -> None:
    reply = parse_response(response(block="SAFETY"))
    assert reply.block_reason == "SAFETY"
    assert reply.text is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({"usageMetadata": {}}, id="no-candidates"),
        pytest.param({"candidates": ["x"]}, id="candidate-not-object"),
    ],
)
def test_parse_rejects_what_is_not_a_response(body: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_response(body)


def _error(code: int, status: str, *details: dict[str, object]) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": "m", "status": status, "details": list(details)}})


RETRY: dict[str, object] = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "22.5s"}


def _quota(quota_id: str) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota_id}]}


def test_429_per_minute_is_rate_limited_with_the_servers_delay() -> None:
    error = error_from_response(
        429, _error(429, "RESOURCE_EXHAUSTED", _quota("GenerateRequestsPerMinutePerProjectPerModel"), RETRY)
    )
    assert isinstance(error, RateLimited)
    assert error.retry_after == 22.5
    assert error.quota_id == "GenerateRequestsPerMinutePerProjectPerModel"


def test_429_per_day_is_quota_exhausted() -> None:
    error = error_from_response(
        429,
        _error(429, "RESOURCE_EXHAUSTED", _quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), RETRY),
    )
    assert isinstance(error, QuotaExhausted)


def test_429_without_retry_info_falls_back_to_retry_after_header() -> None:
    error = error_from_response(429, _error(429, "RESOURCE_EXHAUSTED"), "7")
    assert isinstance(error, RateLimited) and error.retry_after == 7.0 and error.quota_id is None


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        pytest.param(403, _error(403, "PERMISSION_DENIED"), AuthError, id="403"),
        pytest.param(401, b"", AuthError, id="401-empty"),
        pytest.param(
            400,
            _error(
                400,
                "INVALID_ARGUMENT",
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
            ),
            AuthError,
            id="bad-key",
        ),
        pytest.param(400, _error(400, "INVALID_ARGUMENT"), RequestRejected, id="400"),
        pytest.param(404, _error(404, "NOT_FOUND"), RequestRejected, id="404"),
        pytest.param(500, _error(500, "INTERNAL"), ServerError, id="500"),
        pytest.param(503, b"<html>busy</html>", ServerError, id="503-html"),
        pytest.param(504, _error(504, "DEADLINE_EXCEEDED"), ServerError, id="504"),
    ],
)
def test_error_mapping(status: int, body: bytes, kind: type[Exception]) -> None:
    error = error_from_response(status, body)
    assert type(error) is kind
    assert error.http_status == status


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def _events(decoder: SseDecoder, *chunks: bytes) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    return out


def test_sse_decoder_handles_crlf_comments_multiline_data_and_split_chunks() -> None:
    stream = b': keep-alive\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata: {"b": 2}\r\n\r\n'
    whole = _events(SseDecoder(), stream)
    byte_by_byte = _events(SseDecoder(), *(stream[i : i + 1] for i in range(len(stream))))
    assert whole == byte_by_byte == [{"a": 1}, {"b": 2}]


def test_sse_decoder_raises_the_mid_stream_error_object() -> None:
    stream = b'data: {"a": 1}\n\n{\n  "error": {"code": 503, "status": "UNAVAILABLE", "message": "x"}\n}\n'
    decoder = SseDecoder()
    with pytest.raises(ServerError):
        _events(decoder, stream)


def test_sse_event_cut_mid_json_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        _events(SseDecoder(), b'data: {"candidates": [')


def _chunk(text: str, finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, object]:
    candidate: dict[str, object] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        candidate["finishReason"] = finish
    event: dict[str, object] = {"candidates": [candidate], "modelVersion": "v"}
    if usage:
        event["usageMetadata"] = usage
    return event


def test_merge_stream_concatenates_text_and_keeps_the_last_usage() -> None:
    """Usage is cumulative on 2.5 streams: the last event's counts are the call's, never a sum."""
    events = [
        _chunk("Hel", usage={"promptTokenCount": 5, "totalTokenCount": 5}),
        _chunk("lo", usage={"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6}),
        _chunk("!", "STOP", usage={"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}),
    ]
    merged = parse_response(merge_stream(events))
    unary = parse_response(
        response("Hello!", usage={"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7})
    )
    assert merged.text == unary.text
    assert merged.usage == unary.usage
    assert merged.finish_reason == "STOP"


def test_merge_stream_without_final_event_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        merge_stream([_chunk("Hel")])
    with pytest.raises(TransportError):
        merge_stream([])


def _grounded(text: str, chunks: list[str], supports: list[int], finish: str | None = None) -> dict[str, object]:
    event = _chunk(text, finish)
    grounding: dict[str, object] = {}
    if chunks:
        grounding["groundingChunks"] = [{"retrievedContext": {"text": chunk}} for chunk in chunks]
    if supports:
        grounding["groundingSupports"] = [{"segment": {"endIndex": 5}, "groundingChunkIndices": supports}]
    candidates = event["candidates"]
    assert isinstance(candidates, list)
    candidates[0]["groundingMetadata"] = grounding
    return event


def test_merge_stream_accumulates_grounding_across_events() -> None:
    """Google numbers grounding chunks over the whole stream: a support on the last event may point at a chunk
    that came on an earlier one, so chunks and supports are concatenated in arrival order, never replaced;
    the empty `groundingMetadata: {}` of Google Search streams changes nothing."""
    events = [
        _grounded("The capital", ["Paris is the capital."], []),
        _grounded(" of France", [], []),
        _grounded(" is Paris.", ["The Eiffel Tower is in Paris."], [1], "STOP"),
    ]
    grounding = parse_response(merge_stream(events)).metadata["groundingMetadata"]
    assert [c["retrievedContext"]["text"] for c in grounding["groundingChunks"]] == [
        "Paris is the capital.",
        "The Eiffel Tower is in Paris.",
    ]
    assert [s["groundingChunkIndices"] for s in grounding["groundingSupports"]] == [[1]]


def test_merge_stream_of_the_recorded_file_search_stream_keeps_every_chunk_a_support_points_at() -> None:
    """The recorded 2.5-pro file-search stream (tests/recorded): one chunk on event 2, one on event 5 whose
    supports say chunk 1."""
    recording = load(RECORDED / "gemini-2.5" / "stream-file-search.json")
    grounding = parse_response(merge_stream(recording.events)).metadata["groundingMetadata"]
    chunks = grounding["groundingChunks"]
    assert len(chunks) == 2
    assert all(i < len(chunks) for s in grounding["groundingSupports"] for i in s["groundingChunkIndices"])


@pytest.mark.parametrize(
    ("name", "calls"),
    [
        pytest.param(
            "vertex-stream-partial-args.json",
            [("getWeather", {"location": "Boston"}), ("getWeather", {"location": "San Francisco"})],
            id="two-calls",
        ),
        pytest.param(
            "vertex-stream-partial-args-provisioned.json",
            [
                (
                    "writeItems",
                    {
                        "operations": [
                            {"action": "add", "description": "Fresh red apple", "itemid": "apple_001", "price": 0.5},
                            {
                                "action": "add",
                                "description": "Ripe yellow banana",
                                "itemid": "banana_001",
                                "price": 0.3,
                            },
                        ]
                    },
                )
            ],
            id="array-paths-no-closing-event",
        ),
    ],
)
def test_merge_stream_puts_together_function_call_arguments_streamed_in_pieces(
    name: str, calls: list[tuple[str, dict[str, object]]]
) -> None:
    """Vertex streams a call's arguments as `partialArgs` pieces (JSON paths into the arguments, strings in
    several pieces); merged, they are the call the unary answer would hold (recorded by vercel/ai)."""
    recording = load(RECORDED / "gemini-3" / name)
    reply = parse_response(merge_stream(recording.events))
    assert [(call.name, call.args) for call in reply.function_calls] == calls


def test_merge_stream_takes_usage_field_by_field() -> None:
    """Vertex puts only trafficType on every event but the last; a count missing from the last event that an
    earlier one had is kept."""
    events = [
        _chunk("a", usage={"promptTokenCount": 5, "thoughtsTokenCount": 9}),
        _chunk("b", "STOP", usage={"promptTokenCount": 5, "totalTokenCount": 20}),
    ]
    merged = merge_stream(events)
    assert merged["usageMetadata"] == {"promptTokenCount": 5, "thoughtsTokenCount": 9, "totalTokenCount": 20}
