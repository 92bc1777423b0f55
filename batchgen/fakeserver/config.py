"""The fake server's settings: one frozen value, validated once when it is built."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from batchgen.fakeserver.batch.config import BatchConfig, FilesConfig
from batchgen.fakeserver.tiers import TierConfig

# Transport faults break the exchange itself: an error status, no answer, or a 200 that is not a usable
# GenerateContentResponse. `fail_rate` picks among these.
TRANSPORT_FAULTS = (
    "429",
    "429help",
    "429day",
    "500",
    "503",
    "drop",
    "slow",
    "nonjson",
    "nocandidates",
    "sse_cut",
    "sse_error",
)
# Output faults are well-formed 200 responses whose content is unusable. `violate_rate` picks among these.
OUTPUT_FAULTS = ("blocked", "safety", "max_tokens", "invalid_json", "schema_violation")
# Faults only a batch line acts on (its key left out, or an error line in a given shape; see batch.answers);
# a generateContent call with one of these directives is answered normally.
BATCH_FAULTS = ("missing", "error_line", "status_line")
FAULT_NAMES = TRANSPORT_FAULTS + OUTPUT_FAULTS + BATCH_FAULTS

# Only faults that a real client meets often get weight by default; "429day" is sticky and "slow" stalls a
# client for its whole timeout, so they are opt-in for random injection (directives can always name them).
DEFAULT_FAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "429": 3.0,
        "429help": 1.0,
        "429day": 0.0,
        "500": 1.0,
        "503": 2.0,
        "drop": 1.0,
        "slow": 0.0,
        "nonjson": 0.5,
        "nocandidates": 0.5,
        "sse_cut": 1.0,
        "sse_error": 1.0,
    }
)
DEFAULT_VIOLATION_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"blocked": 1.0, "safety": 1.0, "max_tokens": 1.0, "invalid_json": 1.0, "schema_violation": 2.0}
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the fake Gemini server behaves: address, key, latency, injected faults, quotas, and the settings of
    the Files and Batch APIs and of the service tiers.

    Rates are fractions of generate requests; quotas are per model, like the API's per-project-per-model
    limits. `rpm` and `tpm` are enforced over a sliding window of `quota_window_s` seconds whose capacity is
    scaled to the window (rate * window / 60), so a test can use a 2 s window with per-minute numbers.
    `rpd` uses fixed windows of `day_window_s` seconds, or calendar days in America/Los_Angeles when None.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = field(default="fake-key", repr=False)
    # Model names served; empty means any name starting with "gemini-".
    models: tuple[str, ...] = ()
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    seed: int = 0
    fail_rate: float = 0.0
    fault_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_FAULT_WEIGHTS)
    violate_rate: float = 0.0
    violation_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_VIOLATION_WEIGHTS)
    # How long a "slow" fault stalls before it answers: meant to exceed the client's timeout.
    slow_s: float = 30.0
    # RetryInfo.retryDelay of injected transient 429s ("429" fault).
    retry_delay_s: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    quota_window_s: float = 60.0
    day_window_s: float | None = None
    # The Files API, the Batch API and the service tiers, each validated by its own value.
    files: FilesConfig = field(default_factory=FilesConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    tiers: TierConfig = field(default_factory=TierConfig)

    def __post_init__(self) -> None:
        _check_range("port", self.port, 0, 65535)
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        _check_range("latency_ms", self.latency_ms, 0.0, math.inf)
        _check_range("latency_jitter_ms", self.latency_jitter_ms, 0.0, math.inf)
        _check_range("fail_rate", self.fail_rate, 0.0, 1.0)
        _check_range("violate_rate", self.violate_rate, 0.0, 1.0)
        _check_range("slow_s", self.slow_s, 0.0, math.inf)
        _check_range("retry_delay_s", self.retry_delay_s, 0.0, math.inf)
        _check_weights("fault_weights", self.fault_weights, TRANSPORT_FAULTS)
        _check_weights("violation_weights", self.violation_weights, OUTPUT_FAULTS)
        for name in ("rpm", "tpm", "rpd"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1, got {limit}")
        if not self.quota_window_s > 0:
            raise ValueError(f"quota_window_s must be positive, got {self.quota_window_s}")
        if self.day_window_s is not None and not self.day_window_s > 0:
            raise ValueError(f"day_window_s must be positive, got {self.day_window_s}")
        # Freeze caller-supplied dicts so the config stays a value.
        object.__setattr__(self, "fault_weights", MappingProxyType(dict(self.fault_weights)))
        object.__setattr__(self, "violation_weights", MappingProxyType(dict(self.violation_weights)))


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_weights(name: str, weights: Mapping[str, float], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(weights) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown fault names {unknown}; allowed: {', '.join(allowed)}")
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError(f"{name}: weights must be finite and >= 0")
