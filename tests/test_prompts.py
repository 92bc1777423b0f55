"""Rows become prompts: id, contents and kept columns, or a clear reason they cannot be sent."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from batchgen.input.prompts import PromptBuilder


def text_of(contents: bytes) -> str:
    return str(orjson.loads(contents)[0]["parts"][0]["text"])


def test_template_renders_the_row() -> None:
    builder = PromptBuilder(id_field="id", prompt_template="Rate: {review} ({stars}*)", keep_columns=("stars",))
    prompt = builder.build({"id": 7, "review": "good", "stars": 5}, 0, "in.jsonl", "line:1")
    assert prompt.id == "7"
    assert text_of(prompt.contents) == "Rate: good (5*)"
    assert prompt.keep == {"stars": 5}
    assert prompt.problem is None


def test_contents_field_is_sent_as_is() -> None:
    contents = [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]
    builder = PromptBuilder(prompt_field="prompt")
    prompt = builder.build({"contents": contents, "prompt": "ignored"}, 3, "in.jsonl", "line:4")
    assert orjson.loads(prompt.contents) == contents
    assert prompt.id == "3"


def test_contents_given_as_a_json_string_is_parsed() -> None:
    prompt = PromptBuilder().build({"contents": '[{"parts": [{"text": "x"}]}]'}, 0, "in.parquet", "row:0")
    assert orjson.loads(prompt.contents) == [{"parts": [{"text": "x"}]}]


@pytest.mark.parametrize(
    ("builder", "row", "problem"),
    [
        pytest.param(PromptBuilder(prompt_field="prompt"), {"prompt": "  "}, "prompt is empty", id="empty"),
        pytest.param(PromptBuilder(prompt_field="prompt"), {"prompt": 3}, "'prompt' is missing", id="wrong-type"),
        pytest.param(PromptBuilder(prompt_template="{a} {b}"), {"a": 1}, "['b']", id="template-field-missing"),
        pytest.param(PromptBuilder(), {"x": 1}, "no 'contents' field", id="no-prompt"),
        pytest.param(PromptBuilder(), {"contents": []}, "non-empty list", id="empty-contents"),
        pytest.param(PromptBuilder(), {"contents": "{oops"}, "not valid JSON", id="contents-not-json"),
    ],
)
def test_unusable_rows_carry_their_problem(builder: PromptBuilder, row: dict[str, object], problem: str) -> None:
    prompt = builder.build(row, 0, "in.jsonl", "line:1")
    assert prompt.problem is not None and problem in prompt.problem
    assert prompt.contents == b""


def test_row_without_a_readable_id_is_named_by_its_line() -> None:
    builder = PromptBuilder(id_field="id", prompt_field="p")
    for row in ({"p": "x"}, {"id": None, "p": "x"}, {"id": 1.5, "p": "x"}, {"id": True, "p": "x"}):
        prompt = builder.build(row, 0, "in.jsonl", "line:9")
        assert prompt.id == "line:9"
        assert prompt.where == "in.jsonl line 9"
        assert prompt.problem is not None and "id field 'id'" in prompt.problem


def test_non_object_row() -> None:
    prompt = PromptBuilder().build([1, 2], 0, "in.jsonl", "line:2")
    assert prompt.problem == "row is a JSON list, not an object"


def test_media_file_is_sent_inline_and_uris_as_file_data(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(b"\x89PNG fake")
    builder = PromptBuilder(prompt_field="p", media_field="image", media_uri_field="doc", media_root=tmp_path)
    prompt = builder.build({"p": "Describe", "image": "cat.png", "doc": "gs://b/report.pdf"}, 0, "in.jsonl", "line:1")
    parts = orjson.loads(prompt.contents)[0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"\x89PNG fake").decode()}}
    assert parts[1] == {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://b/report.pdf"}}
    assert parts[2] == {"text": "Describe"}


def test_missing_media_file_is_a_row_problem(tmp_path: Path) -> None:
    builder = PromptBuilder(prompt_field="p", media_field="image", media_root=tmp_path)
    prompt = builder.build({"p": "Describe", "image": "nope.jpg"}, 0, "in.jsonl", "line:1")
    assert prompt.problem is not None and "cannot read media file" in prompt.problem
