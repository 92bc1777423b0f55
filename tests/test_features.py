"""The full generateContent surface end to end: job files written here, run by the real CLI over loopback HTTP.

Streaming, thinking, grounding, function calling, context caching and multimodal input each pass through a
job to the local Gemini server and come back as result columns; a thinking control the model cannot take is
refused before anything is sent.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pytest
from PIL import Image
from servers import CaptureServer, server_process

from batchgen.cli import main

KEY = "features-key-61c2"
QUESTIONS = [
    "Why do lighthouses use Fresnel lenses?",
    "How does a sourdough starter work?",
    "What limits the speed of a sailing boat?",
    "Why do cats purr?",
]
TOKEN_COLUMNS = [
    "prompt_token_count",
    "candidates_token_count",
    "thoughts_token_count",
    "cached_content_token_count",
    "tool_use_prompt_token_count",
    "total_token_count",
]
LABEL_SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "topic": {"type": "STRING", "enum": ["science", "food", "sport", "animals"]},
        "confidence": {"type": "NUMBER"},
    },
    "required": ["topic", "confidence"],
}


def write_job(
    folder: Path,
    request: str,
    rows: list[dict[str, Any]],
    *,
    model: str = "gemini-2.5-flash",
    input_keys: str = "",
    name: str = "job",
) -> Path:
    """A job over `rows` (JSONL next to it) whose [request] table body is `request`; results go to out-NAME."""
    (folder / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    job = folder / f"{name}.toml"
    job.write_text(
        f'model = "{model}"\n'
        f'[input]\npath = "{name}.jsonl"\nid_field = "id"\nprompt_template = "{{q}}"\n{input_keys}\n'
        f'[output]\npath = "out-{name}"\n'
        "[limits]\nconcurrency = 4\n"
        f"[request]\n{request}\n",
        encoding="utf-8",
    )
    return job


def question_rows(suffix: str = "") -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "q": question + suffix} for i, question in enumerate(QUESTIONS)]


def run_local(job: Path) -> list[dict[str, Any]]:
    """`batchgen run JOB --local-server`; the results, one dict per row, ordered by id."""
    assert main(["run", str(job), "--local-server"]) == 0
    return results(job.parent / f"out-{job.stem}")


def results(folder: Path) -> list[dict[str, Any]]:
    rows = ds.dataset(folder, format="parquet").to_table().to_pylist()
    return sorted(rows, key=lambda row: row["id"])


@pytest.mark.parametrize(
    "request_body",
    [
        pytest.param(
            "generationConfig = { responseMimeType = 'application/json', responseSchema = 'label.json', "
            "thinkingConfig = { includeThoughts = true } }",
            id="json-mode-with-thoughts",
        ),
        pytest.param(
            "tools = [{ googleSearch = {} }]\ngenerationConfig = { thinkingConfig = { includeThoughts = true } }",
            id="text-with-grounding",
        ),
    ],
)
def test_stream_gives_the_same_results_as_unary(tmp_path: Path, request_body: str) -> None:
    """`stream = true` goes over `:streamGenerateContent?alt=sse`, and each row's text, JSON output, thoughts,
    extras and token counts are byte-identical to the unary call's for the same server output."""
    (tmp_path / "label.json").write_bytes(orjson.dumps(LABEL_SCHEMA))
    unary = run_local(write_job(tmp_path, request_body, question_rows(), name="unary"))
    streamed = run_local(write_job(tmp_path, f"stream = true\n{request_body}", question_rows(), name="streamed"))
    compared = ["id", "status", "text", "output_json", "thoughts", "finish_reason", *TOKEN_COLUMNS]
    extras = ["function_calls", "grounding_queries", "grounding_chunks", "grounding_supports", "citations"]
    compared += [column for column in extras if column in unary[0]]  # the columns the job's features have
    assert set(streamed[0]) == set(unary[0])
    assert [{c: row[c] for c in compared} for row in streamed] == [{c: row[c] for c in compared} for row in unary]
    assert {row["status"] for row in streamed} == {"ok"}
    assert all(row["text"] and row["thoughts"] for row in streamed)


def test_thought_summaries_go_to_the_thoughts_column_never_into_text(tmp_path: Path) -> None:
    """`includeThoughts = true`: summaries land in `thoughts`, the answer alone in `text`, and the thinking
    tokens in `thoughts_token_count`, which the total includes."""
    request = "generationConfig = { thinkingConfig = { thinkingBudget = 2048, includeThoughts = true } }"
    rows = run_local(write_job(tmp_path, request, question_rows()))
    for row in rows:
        assert row["status"] == "ok"
        assert row["thoughts"] and row["text"]
        assert row["thoughts"] not in row["text"] and row["text"] not in row["thoughts"]
        assert row["thoughts_token_count"] > 0
        assert row["total_token_count"] == (
            row["prompt_token_count"] + row["candidates_token_count"] + row["thoughts_token_count"]
        )


def test_thinking_is_counted_even_when_summaries_are_not_asked_for(tmp_path: Path) -> None:
    """`thoughts_token_count` is recorded whatever `includeThoughts` says; `thoughts` stays null without it."""
    rows = run_local(write_job(tmp_path, "", question_rows()))
    assert all(row["thoughts"] is None and row["thoughts_token_count"] > 0 for row in rows)


def test_google_search_fills_the_grounding_columns(tmp_path: Path) -> None:
    """`tools = [{ googleSearch = {} }]`: the queries, sources and supported segments are structured columns,
    and the search's tool-use prompt tokens are counted."""
    rows = run_local(write_job(tmp_path, "tools = [{ googleSearch = {} }]", question_rows()))
    for row in rows:
        assert row["status"] == "ok"
        assert row["grounding_queries"]
        assert all(chunk["uri"].startswith("https://") and chunk["title"] for chunk in row["grounding_chunks"])
        supports = row["grounding_supports"]
        assert supports and supports[0]["start_index"] == 0
        for support in supports:
            assert row["text"].encode()[support["start_index"] : support["end_index"]].decode() == support["text"]
            assert all(0 <= i < len(row["grounding_chunks"]) for i in support["chunk_indices"])
        assert row["tool_use_prompt_token_count"] > 0


def test_forced_function_calls_land_in_the_function_calls_column(tmp_path: Path) -> None:
    """`functionDeclarations` with mode ANY: each row's call is stored as name + args JSON, and the row is ok
    although it has no text."""
    request = (
        "tools = [{ functionDeclarations = [{ name = 'get_weather', description = 'Weather for a city', "
        "parameters = { type = 'OBJECT', properties = { city = { type = 'STRING' }, days = { type = 'INTEGER' } }, "
        "required = ['city'] } }] }]\n"
        "toolConfig = { functionCallingConfig = { mode = 'ANY' } }"
    )
    rows = run_local(write_job(tmp_path, request, question_rows()))
    for row in rows:
        assert row["status"] == "ok" and row["text"] is None
        (call,) = row["function_calls"]
        assert call["name"] == "get_weather"
        args = orjson.loads(call["args_json"])
        assert isinstance(args["city"], str)
        assert set(args) <= {"city", "days"}


def test_cached_content_is_counted_inside_the_prompt_tokens(tmp_path: Path) -> None:
    """`cachedContent` passes through; `cached_content_token_count` is recorded and is part of
    `prompt_token_count`, as the API reports it."""
    rows = run_local(write_job(tmp_path, "cachedContent = 'cachedContents/handbook-v2'", question_rows()))
    for row in rows:
        assert row["status"] == "ok"
        assert row["cached_content_token_count"] > 0
        assert row["prompt_token_count"] > row["cached_content_token_count"]


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_multimodal_rows_send_files_inline_and_uris_as_file_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path column becomes inlineData whose base64 decodes to the file's bytes, with the MIME type from the
    file name; a URI column becomes fileData with the MIME type from a column. Media parts precede the text."""
    (tmp_path / "images").mkdir()
    pictures = {"red": png((255, 0, 0)), "teal": png((0, 128, 128))}
    for name, data in pictures.items():
        (tmp_path / "images" / f"{name}.png").write_bytes(data)
    rows = [
        {"id": name, "q": f"Describe the {name} image.", "image": f"images/{name}.png", "doc": f"gs://b/{name}.pdf"}
        for name in pictures
    ]
    rows.append({"id": "uri-only", "q": "Summarise.", "doc": "https://example.org/files/x1", "mime": "text/plain"})
    keys = 'media_field = "image"\nmedia_uri_field = "doc"\nmime_field = "mime"'
    job = write_job(tmp_path, "", rows, input_keys=keys)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with server_process("--api-key", KEY) as url, CaptureServer(upstream=url) as tap:
        code = main(["run", str(job), "--base-url", tap.url])
        sent = {body["contents"][0]["parts"][-1]["text"]: body for body in tap.bodies()}
    assert code == 0
    assert [row["status"] for row in results(tmp_path / "out-job")] == ["ok", "ok", "ok"]
    for name, data in pictures.items():
        inline, file_data, text = sent[f"Describe the {name} image."]["contents"][0]["parts"]
        assert inline["inlineData"]["mimeType"] == "image/png"
        assert base64.b64decode(inline["inlineData"]["data"], validate=True) == data
        assert file_data == {"fileData": {"mimeType": "application/pdf", "fileUri": f"gs://b/{name}.pdf"}}
        assert text == {"text": f"Describe the {name} image."}
    assert sent["Summarise."]["contents"][0]["parts"][0] == {
        "fileData": {"mimeType": "text/plain", "fileUri": "https://example.org/files/x1"}
    }


def test_thinking_level_on_a_25_model_exits_2_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`thinkingLevel` is for Gemini 3; on a 2.5 model the job is refused at start, naming the file and key,
    and not one request goes out."""
    request = "generationConfig = { thinkingConfig = { thinkingLevel = 'LOW' } }"
    job = write_job(tmp_path, request, question_rows())
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with CaptureServer() as server:
        assert main(["run", str(job), "--base-url", server.url]) == 2
        assert server.requests == []
    err = capsys.readouterr().err
    assert str(job) in err and "request.generationConfig.thinkingConfig" in err and "thinkingLevel" in err


def test_a_stream_cut_before_its_final_event_is_retried(tmp_path: Path) -> None:
    """A stream that stops mid-event is a transport failure: the request is sent again and the row ends ok
    after two attempts, billed for the one response that arrived."""
    rows = run_local(write_job(tmp_path, "stream = true", question_rows(" [[fake:sse_cut*1]]")))
    for row in rows:
        assert row["status"] == "ok" and row["text"]
        assert (row["attempts"], row["responses"]) == (2, 1)
        assert row["error"] is None
