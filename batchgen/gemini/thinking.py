"""thinkingConfig checked against the model family before anything is sent.

The API answers a wrong thinking control with 400 INVALID_ARGUMENT on every row; catching it at start saves a
job of failed calls. Families (shared/reference/gemini-api.md §10):
  gemini-2.5-*   thinkingBudget only (0 off where allowed, -1 dynamic, N tokens within the model's range)
  gemini-3*      thinkingLevel (MINIMAL, LOW, MEDIUM, HIGH; Pro: LOW or HIGH); thinkingBudget still accepted
  gemini-2.0-*, gemini-1.*   cannot think: no thinkingConfig at all
Model names this table does not know (proxies, future models) are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")

# (smallest budget, largest budget, can thinking be turned off with 0)
_BUDGETS_25 = {
    "gemini-2.5-flash-lite": (512, 24576, True),
    "gemini-2.5-flash": (0, 24576, True),
    "gemini-2.5-pro": (128, 32768, False),
}
_NON_THINKING = ("gemini-2.0-", "gemini-1.")


def check_thinking(model: str, generation_config: Mapping[str, Any]) -> str | None:
    """Why this thinkingConfig would be refused for `model`, or None when it is fine (or unknown)."""
    config = generation_config.get("thinkingConfig")
    if config is None:
        return None
    if not isinstance(config, Mapping):
        return "thinkingConfig must be a table"
    name = model.removeprefix("models/")
    budget, level = config.get("thinkingBudget"), config.get("thinkingLevel")
    if budget is not None and level is not None:
        return "set thinkingBudget or thinkingLevel, not both"
    if name.startswith(_NON_THINKING):
        return f"{name} cannot think: remove thinkingConfig"
    if name.startswith("gemini-2.5"):
        if level is not None:
            return f"thinkingLevel is for Gemini 3 models; {name} takes thinkingBudget (0 off, -1 dynamic, N tokens)"
        return _check_budget(name, budget)
    if name.startswith("gemini-3"):
        return _check_level(name, level) if level is not None else _budget_type(budget)
    return None


def _check_budget(name: str, budget: Any) -> str | None:
    if budget is None:
        return None
    problem = _budget_type(budget)
    if problem:
        return problem
    family = next((key for key in _BUDGETS_25 if name.startswith(key)), None)
    if family is None or budget == -1:
        return None
    low, high, can_disable = _BUDGETS_25[family]
    if budget == 0:
        return None if can_disable else f"{name} cannot turn thinking off (thinkingBudget 0); use {low}..{high} or -1"
    if not low <= budget <= high:
        return f"thinkingBudget {budget} is outside {low}..{high} for {family} (or use -1 for dynamic)"
    return None


def _budget_type(budget: Any) -> str | None:
    if budget is None or (isinstance(budget, int) and not isinstance(budget, bool) and budget >= -1):
        return None
    return "thinkingBudget must be an integer: 0 (off), -1 (dynamic) or a token count"


def _check_level(name: str, level: Any) -> str | None:
    if not isinstance(level, str) or level.upper() not in LEVELS:
        return f"thinkingLevel must be one of {', '.join(LEVELS)}"
    if "-pro" in name and level.upper() not in ("LOW", "HIGH"):
        return f"{name} supports thinkingLevel LOW or HIGH only"
    return None
