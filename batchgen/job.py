"""The job file: TOML parsed and validated once into immutable values.

Relative paths in a job file are resolved against the job file's own folder, so a job runs the same from any
working directory (cron); paths given on the command line are resolved by the CLI against the working folder.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    ValidationError,
    field_validator,
    model_validator,
)

from batchgen.errors import ConfigError
from batchgen.gemini.thinking import check_thinking
from batchgen.results.columns import CONTRACT
from batchgen.schema.response import ResponseSchema, load_response_schema

# Top-level GenerateContentRequest fields a job may set in [request] (`contents` comes from each row).
REQUEST_FIELDS = frozenset(
    {
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "tools",
        "toolConfig",
        "cachedContent",
        "serviceTier",
        "labels",
    }
)

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Section):
    """Where rows come from and how each becomes a prompt."""

    path: Path
    id_field: str | None = None
    prompt_template: str | None = None
    prompt_field: str | None = None
    contents_field: str = "contents"
    media_field: str | None = None
    media_uri_field: str | None = None
    mime_field: str | None = None

    @model_validator(mode="after")
    def _one_prompt_source(self) -> InputSpec:
        if self.prompt_template is not None and self.prompt_field is not None:
            raise ValueError("set prompt_template or prompt_field, not both")
        return self


class LimitsSpec(_Section):
    """Concurrency, rate limits, retries and stop conditions."""

    concurrency: PositiveInt = 64
    max_attempts: PositiveInt = 6
    timeout_s: PositiveFloat = 120.0
    max_reasks: Annotated[int, Field(ge=0)] = 1
    reask_max_output_tokens: PositiveInt | None = None
    requests_per_minute: PositiveFloat | None = None
    tokens_per_minute: PositiveFloat | None = None
    requests_per_day: PositiveInt | None = None
    token_estimate: Literal["local", "count"] = "local"
    # The window the server counts per-minute quotas over: Gemini's is a minute. Only for a server that
    # scales them to a shorter one (the local server's --quota-window-s).
    quota_window_s: Annotated[float, Field(gt=0, le=60)] = 60.0
    max_prompt_tokens: PositiveInt | None = None
    # Exit 1 above this: a few unusable rows (a malformed line, a row the API refuses) do not fail a nightly run,
    # a systematic problem (a server failing half the requests, a prompt the model cannot answer) does.
    max_failed_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1
    max_cost_usd: PositiveFloat | None = None
    # After Ctrl-C / SIGTERM (or a fatal error), rows in flight get this long to finish before they are cancelled.
    grace_s: Annotated[float, Field(ge=0)] = 30.0


class OutputSpec(_Section):
    """Where results go and which extra columns they carry."""

    path: Path
    keep_columns: tuple[str, ...] = ()
    flatten: bool | None = None
    column_prefix: str = "out_"
    flush_rows: PositiveInt = 5000
    flush_seconds: PositiveFloat = 10.0


class Job(_Section):
    """A validated job: what to send, to whom, under which limits, and where results go."""

    file: Path
    model: str
    base_url: str = "https://generativelanguage.googleapis.com"
    api_key_env: str = "GEMINI_API_KEY"
    auth: Literal["x-goog-api-key", "bearer"] = "x-goog-api-key"
    input: InputSpec
    request: Mapping[str, Any] = Field(default_factory=dict)
    stream: bool = False
    limits: LimitsSpec = LimitsSpec()
    output: OutputSpec
    schema_: InstanceOf[ResponseSchema] | None = Field(default=None, alias="schema")

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)

    @field_validator("request")
    @classmethod
    def _known_request_fields(cls, request: Mapping[str, Any]) -> Mapping[str, Any]:
        unknown = sorted(set(request) - REQUEST_FIELDS)
        if unknown:
            raise ValueError(f"unknown request field(s) {unknown}; allowed: {sorted(REQUEST_FIELDS)}")
        return request

    @property
    def json_mode(self) -> bool:
        config = self.request.get("generationConfig") or {}
        return config.get("responseMimeType") == "application/json"

    @property
    def flatten(self) -> bool:
        """Typed `out_` columns: on by default in JSON mode with an object schema."""
        wanted = self.json_mode if self.output.flatten is None else self.output.flatten
        return wanted and self.schema_ is not None

    def fingerprint(self) -> str:
        """Identity of what a row's answer depends on; a results folder refuses a job with another one."""
        identity = {
            "model": self.model.removeprefix("models/"),
            "request": self.request,
            "input": self.input.model_dump(mode="json", exclude={"path"}),
        }
        return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def with_overrides(self, **changes: Any) -> Job:
        """A copy with top-level fields and `limits`/`input`/`output` entries replaced (CLI flags), re-checked."""
        data = dict(self)
        for section in ("input", "limits", "output"):
            if section in changes:
                data[section] = {**data[section].model_dump(), **changes.pop(section)}
        data.update(changes)
        return _validated(data, str(self.file))


def load_job(path: Path) -> Job:
    """Read, resolve and validate a job file; every problem is a ConfigError naming the file and key."""
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read job file: {exc.strerror or exc}", file=file) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from exc
    return _resolved(raw, path, path.resolve().parent)


def job_from_dict(data: Mapping[str, Any], *, base_dir: Path | str = ".") -> Job:
    """A job from a mapping of the job file's shape (for notebooks and pipelines), validated as a file would be.

    Relative paths resolve against `base_dir`. A schema may be given inline as a dict, as a path, or as a
    pydantic model class (its JSON Schema becomes `responseJsonSchema`).
    """
    base = Path(base_dir).resolve()
    raw = dict(data)
    request = dict(raw.get("request") or {})
    config = dict(request.get("generationConfig") or {})
    for key in ("responseSchema", "responseJsonSchema"):
        schema = config.get(key)
        if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
            config.pop(key)
            config["responseJsonSchema"] = schema.model_json_schema()
    if config:
        request["generationConfig"] = config
    raw["request"] = request
    return _resolved(raw, base / "<dict>", base)


def _resolved(raw: Mapping[str, Any], path: Path, base: Path) -> Job:
    """A raw job (as read from TOML) with its paths resolved against `base` and its schema loaded, validated."""
    file = str(path)
    request = dict(raw.get("request") or {})
    stream = request.pop("stream", False)
    schema = load_response_schema(request.get("generationConfig") or {}, base, job_file=file)
    if schema is not None:
        config = {k: v for k, v in request["generationConfig"].items() if k != schema.dialect.value}
        request["generationConfig"] = {**config, schema.dialect.value: schema.wire}
    data = {**raw, "file": path, "request": request, "stream": stream, "schema": schema}
    for section in ("input", "output"):
        if isinstance(raw.get(section), Mapping) and "path" in raw[section]:
            data[section] = {**raw[section], "path": (base / str(raw[section]["path"])).resolve()}
    return _validated(data, file)


def _validated(data: Mapping[str, Any], file: str) -> Job:
    try:
        job = Job.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or None
        raise ConfigError(error["msg"], file=file, key=key) from None
    _check_request(job, file)
    _check_columns(job, file)
    return job


def _check_request(job: Job, file: str) -> None:
    config = job.request.get("generationConfig") or {}
    problem = check_thinking(job.model, config)
    if problem:
        raise ConfigError(problem, file=file, key="request.generationConfig.thinkingConfig")


def _check_columns(job: Job, file: str) -> None:
    for name in job.output.keep_columns:
        if name in CONTRACT.names or (job.flatten and name.startswith(job.output.column_prefix)):
            raise ConfigError(
                f"keep column {name!r} collides with a result column", file=file, key="output.keep_columns"
            )
