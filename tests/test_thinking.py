"""thinkingConfig is checked against the model family before anything is sent."""

from __future__ import annotations

import pytest

from batchgen.gemini.thinking import check_thinking


@pytest.mark.parametrize(
    ("model", "config", "problem"),
    [
        pytest.param("gemini-2.5-flash", {"thinkingBudget": 0}, None, id="flash-off"),
        pytest.param("gemini-2.5-flash", {"thinkingBudget": -1}, None, id="flash-dynamic"),
        pytest.param("gemini-2.5-flash", {"thinkingBudget": 1024, "includeThoughts": True}, None, id="flash-budget"),
        pytest.param("gemini-2.5-flash", {"thinkingBudget": 52428}, "outside 0..24576", id="flash-too-big"),
        pytest.param("gemini-2.5-flash", {"thinkingLevel": "LOW"}, "thinkingLevel is for Gemini 3", id="flash-level"),
        pytest.param("gemini-2.5-pro", {"thinkingBudget": 0}, "cannot turn thinking off", id="pro-off"),
        pytest.param("models/gemini-2.5-pro", {"thinkingBudget": 64}, "outside 128..32768", id="pro-small"),
        pytest.param("gemini-2.5-flash-lite", {"thinkingBudget": 100}, "outside 512..24576", id="lite-small"),
        pytest.param("gemini-2.5-flash-lite", {"thinkingBudget": 0}, None, id="lite-off"),
        pytest.param("gemini-3-flash-preview", {"thinkingLevel": "minimal"}, None, id="3-flash-minimal"),
        pytest.param("gemini-3-pro-preview", {"thinkingLevel": "MEDIUM"}, "LOW or HIGH only", id="3-pro-medium"),
        pytest.param("gemini-3-pro-preview", {"thinkingLevel": "HIGH"}, None, id="3-pro-high"),
        pytest.param("gemini-3-pro-preview", {"thinkingBudget": 2048}, None, id="3-pro-budget"),
        pytest.param("gemini-3-flash-preview", {"thinkingLevel": "MAX"}, "must be one of", id="3-unknown-level"),
        pytest.param("gemini-3-flash-preview", {"thinkingLevel": "LOW", "thinkingBudget": 1}, "not both", id="both"),
        pytest.param("gemini-2.0-flash", {"thinkingBudget": 0}, "cannot think", id="2.0"),
        pytest.param("gemini-2.5-flash", {"thinkingBudget": "lots"}, "must be an integer", id="budget-type"),
        pytest.param("some-proxy-model", {"thinkingLevel": "ANY"}, None, id="unknown-family"),
    ],
)
def test_thinking_config(model: str, config: dict[str, object], problem: str | None) -> None:
    found = check_thinking(model, {"thinkingConfig": config})
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_no_thinking_config_is_fine() -> None:
    assert check_thinking("gemini-2.0-flash", {"temperature": 0}) is None
