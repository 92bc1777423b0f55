"""The job file: TOML parsed and validated once into immutable values.

Relative paths in a job file are resolved against the job file's own folder, so a job runs the same from any
working directory (cron); paths given on the command line are resolved by the CLI against the working folder.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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
from batchgen.gemini.request import SERVICE_TIERS, RequestTemplate, request_problems
from batchgen.gemini.thinking import check_thinking
from batchgen.input.prompts import template_fields
from batchgen.results.columns import CONTRACT
from batchgen.schema.response import ResponseSchema, load_response_schema

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]

# The online timeout when none is set: a standard call answers in seconds to a couple of minutes; a Flex call
# queues for spare capacity, with a latency target of 1-15 minutes (cookbook Inference_tiers), so it gets the
# top of that target and some margin.
TIMEOUT_S = 120.0
FLEX_TIMEOUT_S = 1200.0
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_DURATION_UNITS = (86400, 3600, 60, 1)


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

    @field_validator("prompt_template")
    @classmethod
    def _renderable(cls, template: str | None) -> str | None:
        if template is not None:
            try:
                template_fields(template)
            except ValueError as exc:
                raise ValueError(f"not a usable template: {exc}") from None
        return template

    @model_validator(mode="after")
    def _one_prompt_source(self) -> InputSpec:
        if self.prompt_template is not None and self.prompt_field is not None:
            raise ValueError("set prompt_template or prompt_field, not both")
        return self


class LimitsSpec(_Section):
    """Concurrency, rate limits, retries and stop conditions."""

    concurrency: PositiveInt = 64
    max_attempts: PositiveInt = 6
    # None: 120 s, or 1200 s for Flex (see `Job.timeout_s`).
    timeout_s: PositiveFloat | None = None
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


class BatchSpec(_Section):
    """How `mode = "batch"` sends rows through the Batch API, and what becomes of rows it does not answer."""

    # Each batch job's input file stays under this many MiB: the Files API takes up to 2 GB a file.
    max_file_mb: Annotated[float, Field(gt=0, le=1900)] = 1900
    # Batch jobs pending or running at once (the API's limit is about 100 per project, UNCONFIRMED).
    max_jobs: PositiveInt = 100
    # Jobs are looked at after 1 s, then at doubling intervals up to this many seconds.
    poll_s: PositiveFloat = 30.0
    # Rows of a batch job not answered this long after it was created ("6h", "90m", "1h30m") are cancelled
    # and sent online (`fallback`); None waits for the Batch API (its target is 24 h).
    deadline: str | None = None
    # How rows that leave the Batch API go: the standard online tier, or Flex (half price, minutes each).
    fallback: Literal["online", "flex"] = "online"
    # Re-asks (invalid JSON, schema mismatch, truncation) go out as a follow-up batch job, or online.
    reasks: Literal["batch", "online"] = "batch"
    # A row whose key is missing from a job's output is resubmitted this many times, then recorded failed.
    max_resubmits: Annotated[int, Field(ge=0)] = 2

    @field_validator("deadline")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not (_DURATION.match(value.strip()) and value.strip()):
            raise ValueError(f"deadline {value!r} is not a duration such as 6h, 90m, 1h30m or 45s")
        return value

    @property
    def deadline_s(self) -> float | None:
        """The deadline in seconds; None without one."""
        if self.deadline is None:
            return None
        match = _DURATION.match(self.deadline.strip())
        assert match is not None  # checked when the job was validated
        return sum(float(part) * unit for part, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if part)


class OutputSpec(_Section):
    """Where results go and which extra columns they carry."""

    path: Path
    keep_columns: tuple[str, ...] = ()
    flatten: bool | None = None
    column_prefix: str = "out_"
    flush_rows: PositiveInt = 5000
    # What a crash (SIGKILL, power loss) can lose: answers received in the last flush_seconds, plus the requests
    # out. A part every 2 s costs a few milliseconds; the small parts of a slow run are merged at its end.
    flush_seconds: PositiveFloat = 2.0


class RaySpec(_Section):
    """`engine = "ray"`: where the cluster is and how the job is spread over it (docs/scale-out.md)."""

    # None starts a local Ray instance for the run; "auto" joins the cluster of this machine; ray://HOST:PORT
    # connects through Ray Client.
    address: str | None = None
    workers: PositiveInt = 2
    # Rows per block: the unit Ray hands a worker, the driver commits, and a killed worker's retry repeats.
    block_rows: PositiveInt = 500
    # Blocks one worker holds at once; its runner works on all of them (`concurrency` requests in flight).
    blocks_per_worker: PositiveInt = 4
    # CPUs Ray reserves per worker: fractional, since a worker mostly waits on the network (and a whole CPU
    # each can leave none for the readers, which then never run).
    worker_cpus: Annotated[float, Field(gt=0)] = 0.25


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
    # How rows travel: one generateContent call each, or in Batch API jobs (half price, answers within 24 h).
    mode: Literal["online", "batch"] = "online"
    limits: LimitsSpec = LimitsSpec()
    batch: BatchSpec = BatchSpec()
    output: OutputSpec
    engine: Literal["local", "ray"] = "local"
    ray: RaySpec = RaySpec()
    schema_: InstanceOf[ResponseSchema] | None = Field(default=None, alias="schema")

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}): {url!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, not {url!r}")
        return url

    @property
    def json_mode(self) -> bool:
        config = self.request.get("generationConfig") or {}
        return config.get("responseMimeType") == "application/json"

    @property
    def service_tier(self) -> str:
        """The service tier online requests ask for (the request's `serviceTier`; standard by default)."""
        return RequestTemplate(self.request).service_tier

    @property
    def timeout_s(self) -> float:
        """Seconds an online call may take: `[limits] timeout_s`, else longer when calls go to Flex (the job's
        tier, or a batch job's fallback)."""
        if self.limits.timeout_s is not None:
            return self.limits.timeout_s
        flex = self.service_tier == "flex" or (self.mode == "batch" and self.batch.fallback == "flex")
        return FLEX_TIMEOUT_S if flex else TIMEOUT_S

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
        """A copy with top-level fields and `limits`/`input`/`output`/`batch`/`ray` entries replaced (CLI flags),
        re-checked.

        A problem with a replaced value is a ConfigError naming its key without the job file, which does not
        hold that value.
        """
        data = dict(self)
        overridden = {key for key, value in changes.items() if not isinstance(value, Mapping)}
        for section in ("input", "limits", "output", "batch", "ray"):
            if section in changes:
                entries = changes.pop(section)
                overridden |= {f"{section}.{key}" for key in entries}
                data[section] = {**data[section].model_dump(), **entries}
        data.update(changes)
        return _validated(data, str(self.file), overridden=frozenset(overridden))


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
    # Before the schema is loaded: a misspelt responseMimeType is reported as that, not as a schema without one.
    for problem in request_problems(request)[:1]:
        raise ConfigError(problem.message, file=file, key=f"request.{problem.key}")
    schema = load_response_schema(request.get("generationConfig") or {}, base, job_file=file)
    if schema is not None:
        config = {k: v for k, v in request["generationConfig"].items() if k != schema.dialect.value}
        request["generationConfig"] = {**config, schema.dialect.value: schema.wire}
    data = {**raw, "file": path, "request": request, "stream": stream, "schema": schema}
    for section in ("input", "output"):
        if isinstance(raw.get(section), Mapping) and "path" in raw[section]:
            data[section] = {**raw[section], "path": (base / str(raw[section]["path"])).resolve()}
    return _validated(data, file)


def _validated(data: Mapping[str, Any], file: str, *, overridden: frozenset[str] = frozenset()) -> Job:
    try:
        job = Job.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or None
        # A value given as an override (a flag) is not in the job file: naming the file would blame it.
        where = None if key in overridden else file
        raise ConfigError(_message(error), file=where, key=key) from None
    _check_request(job, file)
    _check_columns(job, file)
    return job


# The keys a job file may hold in each table, for "unknown key" errors (`file` and `schema` are not keys of the
# file: the loader sets them; `stream` is read from [request]).
_KEYS: dict[tuple[str | int, ...], tuple[str, ...]] = {
    (): tuple(name for name in Job.model_fields if name not in ("file", "schema_", "stream")),
    ("input",): tuple(InputSpec.model_fields),
    ("limits",): tuple(LimitsSpec.model_fields),
    ("output",): tuple(OutputSpec.model_fields),
}


def _message(error: Any) -> str:
    """A pydantic error in the words of a job file (the price file's words for the same mistakes)."""
    kind, context, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        known = _KEYS.get(tuple(error["loc"][:-1]), ())
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1, cutoff=0.6)
        return (
            f"unknown key (did you mean {close[0]!r}?)"
            if close
            else f"unknown key (expected one of {', '.join(known)})"
        )
    if kind == "missing":
        return "required key is missing"
    bounds = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
    }
    if kind in bounds:
        return f"{bounds[kind].format(**context)}, not {given!r}"
    types = {
        "int": "a whole number",
        "float": "a number",
        "bool": "true or false",
        "string": "a string",
        "dict": "a table",
        "tuple": "a list",
        "list": "a list",
    }
    base = kind.removesuffix("_type").removesuffix("_parsing").removesuffix("_from_float")
    if base in types and kind != base:
        return f"must be {types[base]}, not {given!r}"
    if kind == "literal_error":
        return f"must be one of {context.get('expected')}, not {given!r}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"])


def _check_request(job: Job, file: str) -> None:
    config = job.request.get("generationConfig") or {}
    problem = check_thinking(job.model, config)
    if problem:
        raise ConfigError(problem, file=file, key="request.generationConfig.thinkingConfig")
    if job.service_tier not in SERVICE_TIERS:
        raise ConfigError(
            f"unknown serviceTier {job.request['serviceTier']!r}; one of {', '.join(SERVICE_TIERS)}",
            file=file,
            key="request.serviceTier",
        )
    if job.mode == "batch" and job.engine != "local":
        # Batch jobs run at Google, not in the workers: one process submits and collects them.
        raise ConfigError(
            "mode batch runs on the local engine only (the Batch API does the work)", file=file, key="mode"
        )


def _check_columns(job: Job, file: str) -> None:
    for name in job.output.keep_columns:
        if name in CONTRACT.names or (job.flatten and name.startswith(job.output.column_prefix)):
            raise ConfigError(
                f"keep column {name!r} collides with a result column", file=file, key="output.keep_columns"
            )
