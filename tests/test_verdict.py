"""Row status precedence: failed > blocked > truncated > invalid_json > schema_mismatch > ok."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import response

from batchgen.gemini.response import parse_response
from batchgen.records import Status
from batchgen.results.verdict import judge


class NeedsLabel:
    """A validator accepting objects with a string `label`."""

    def validate(self, value: Any) -> str | None:
        if isinstance(value, dict) and isinstance(value.get("label"), str):
            return None
        return "/label: required"


@pytest.mark.parametrize(
    ("body", "json_mode", "status"),
    [
        pytest.param(response('{"label": "a"}'), True, Status.OK, id="json-ok"),
        pytest.param(response('{"label": 1}'), True, Status.SCHEMA_MISMATCH, id="json-mismatch"),
        pytest.param(response('{"label": '), True, Status.INVALID_JSON, id="json-invalid"),
        pytest.param(response('{"label": ', finish="MAX_TOKENS"), True, Status.TRUNCATED, id="json-cut"),
        pytest.param(response('{"label": "a"}', finish="MAX_TOKENS"), True, Status.OK, id="json-complete-at-max"),
        pytest.param(response(None, finish="MAX_TOKENS"), True, Status.TRUNCATED, id="json-empty-at-max"),
        pytest.param(response("partial", finish="SAFETY"), True, Status.BLOCKED, id="json-safety"),
        pytest.param(response(block="PROHIBITED_CONTENT"), True, Status.BLOCKED, id="prompt-blocked"),
        pytest.param(response(None), True, Status.FAILED, id="json-empty"),
        pytest.param(response("hello"), False, Status.OK, id="text-ok"),
        pytest.param(response("hel", finish="MAX_TOKENS"), False, Status.TRUNCATED, id="text-cut"),
        pytest.param(response(None, finish="RECITATION"), False, Status.BLOCKED, id="text-recitation"),
        pytest.param(response(None, finish="OTHER"), False, Status.FAILED, id="text-empty"),
    ],
)
def test_status(body: dict[str, Any], json_mode: bool, status: Status) -> None:
    verdict = judge(parse_response(body), json_mode=json_mode, validator=NeedsLabel())
    assert verdict.status is status
    assert (verdict.error is None) == (status is Status.OK)


def test_ok_json_output_is_reserialised_compactly() -> None:
    verdict = judge(parse_response(response('{ "label" :  "a" }')), json_mode=True, validator=NeedsLabel())
    assert verdict.output == {"label": "a"}
    assert verdict.output_json == '{"label":"a"}'


def test_thought_text_never_reaches_the_json_parser() -> None:
    body = response('{"label": "a"}', thought="Let me think {{{")
    assert judge(parse_response(body), json_mode=True, validator=None).status is Status.OK
