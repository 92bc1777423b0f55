"""What each Gemini model family accepts in `thinkingConfig`, and how much it thinks.

Rules, from the thinking docs as quoted in the project's reference note (section 10):

- gemini-2.5-pro: thinks by default (dynamic); thinkingBudget -1 or 128..32768, 0 is rejected.
- gemini-2.5-flash: thinks by default (dynamic); thinkingBudget -1 or 0..24576, 0 turns thinking off.
- gemini-2.5-flash-lite: does not think by default; thinkingBudget -1, 0 or 512..24576.
- every 2.5 model rejects thinkingLevel.
- gemini-3 and later: thinkingLevel MINIMAL/LOW/MEDIUM/HIGH (default HIGH; 3 Pro only LOW and HIGH);
  thinkingBudget -1 or 0..32768 is still accepted; parts carry a thoughtSignature.
- gemini-1.x and gemini-2.0: any non-empty thinkingConfig is rejected.

Any other "gemini-" name follows the 2.5 Flash rules.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchgen.fakeserver.errors import RpcError, bad_enum, invalid_argument

_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
# Thought tokens drawn for each level, and for dynamic thinking; a budget caps the draw.
_LEVEL_TOKENS = {"MINIMAL": (0, 0), "LOW": (64, 512), "MEDIUM": (256, 1536), "HIGH": (512, 3072)}
_DYNAMIC_TOKENS = (128, 2048)
_MAJOR = re.compile(r"gemini-(\d+)")


class Family(enum.Enum):
    """A group of models that share thinking rules."""

    LEGACY = "legacy"
    PRO_25 = "2.5-pro"
    FLASH_25 = "2.5-flash"
    FLASH_LITE_25 = "2.5-flash-lite"
    GEN3 = "3"


def family_of(model: str) -> Family:
    """The family of a model name such as "gemini-2.5-flash-lite-preview-09-2025"."""
    if model.startswith(("gemini-1.", "gemini-2.0")):
        return Family.LEGACY
    if model.startswith("gemini-2.5-pro"):
        return Family.PRO_25
    if model.startswith("gemini-2.5-flash-lite"):
        return Family.FLASH_LITE_25
    major = _MAJOR.match(model)
    if major and int(major.group(1)) >= 3:
        return Family.GEN3
    return Family.FLASH_25


# Budget bounds per family: (lowest positive budget, highest budget, whether 0 turns thinking off).
_BUDGETS = {
    Family.PRO_25: (128, 32768, False),
    Family.FLASH_25: (1, 24576, True),
    Family.FLASH_LITE_25: (512, 24576, True),
    Family.GEN3: (1, 32768, True),
}


@dataclass(frozen=True, slots=True)
class Thinking:
    """How a request thinks: off, capped by a budget, dynamic, or at a level."""

    enabled: bool
    budget: int | None = None
    level: str | None = None
    include_thoughts: bool = False
    # Gemini 3 returns an opaque thoughtSignature on a part.
    signatures: bool = False

    def draw_tokens(self, rng: random.Random) -> int:
        """The thought tokens this request spends (0 when thinking is off)."""
        if not self.enabled:
            return 0
        low, high = _LEVEL_TOKENS[self.level] if self.level else _DYNAMIC_TOKENS
        drawn = rng.randint(low, high) if high else 0
        return drawn if self.budget is None else min(drawn, self.budget)


def plan_thinking(model: str, config: Mapping[str, Any] | None) -> Thinking:
    """Validate `generationConfig.thinkingConfig` for `model` the way the API does; raise RpcError if not."""
    family = family_of(model)
    config = config or {}
    if family is Family.LEGACY:
        if config:
            raise invalid_argument("Unable to submit request because thinking is not supported by this model.")
        return Thinking(enabled=False)
    include = config.get("includeThoughts", False)
    if not isinstance(include, bool):
        raise bad_enum("generation_config.thinking_config.include_thoughts", "ThinkingConfig", include)
    budget = config.get("thinkingBudget")
    level = config.get("thinkingLevel")
    if budget is not None and level is not None:
        raise invalid_argument("You can only set one of thinking budget and thinking level.")
    signatures = family is Family.GEN3
    if level is not None:
        return Thinking(True, level=_check_level(model, family, level), include_thoughts=include, signatures=True)
    if budget is not None:
        return _budgeted(family, budget, include, signatures)
    if family is Family.GEN3:
        return Thinking(True, level="HIGH", include_thoughts=include, signatures=True)
    return Thinking(family is not Family.FLASH_LITE_25, include_thoughts=include)


def _check_level(model: str, family: Family, level: object) -> str:
    if family is not Family.GEN3:
        raise invalid_argument("Thinking level is not supported for this model.")
    name = level.upper() if isinstance(level, str) else None
    if name not in _LEVELS:
        raise bad_enum("generation_config.thinking_config.thinking_level", "ThinkingConfig.ThinkingLevel", level)
    # Gemini 3 Pro (not 3.1) offers only LOW and HIGH.
    if model.startswith("gemini-3-pro") and name not in ("LOW", "HIGH"):
        raise invalid_argument(f"Thinking level {name} is not supported for this model.")
    return name


def _budgeted(family: Family, budget: object, include: bool, signatures: bool) -> Thinking:
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise RpcError(
            400,
            "INVALID_ARGUMENT",
            f"Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), {budget!r}",
        )
    lowest, highest, zero_disables = _BUDGETS[family]
    if budget == -1:
        return Thinking(True, include_thoughts=include, signatures=signatures)
    if budget == 0 and zero_disables:
        return Thinking(False, signatures=signatures)
    if budget == 0:
        raise invalid_argument("Budget 0 is invalid. This model only works in thinking mode.")
    if not lowest <= budget <= highest:
        raise invalid_argument(f"The thinking budget ({budget}) is invalid.")
    return Thinking(True, budget=budget, include_thoughts=include, signatures=signatures)
