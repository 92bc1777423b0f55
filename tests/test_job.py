"""Job files: validated once, paths relative to the job file, every problem named by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import ConfigError, SchemaError
from batchgen.job import load_job

ROOT = Path(__file__).resolve().parent.parent

JOB = """
model = "gemini-2.5-flash"
base_url = "http://127.0.0.1:1"

[input]
path = "../data/in.jsonl"
id_field = "id"
prompt_template = "Classify: {review}"

[request]
systemInstruction = { parts = [{ text = "Be careful." }] }
generationConfig = { temperature = 0.0, responseMimeType = "application/json", responseSchema = "../schemas/s.json" }

[limits]
concurrency = 8

[output]
path = "../out/x"
keep_columns = ["review"]
"""

SCHEMA = '{"type": "OBJECT", "properties": {"label": {"type": "STRING", "enum": ["a", "b"]}}, "required": ["label"]}'


def write_job(tmp_path: Path, text: str = JOB, schema: str = SCHEMA) -> Path:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    (tmp_path / "schemas").mkdir(exist_ok=True)
    (tmp_path / "schemas" / "s.json").write_text(schema)
    path = tmp_path / "jobs" / "job.toml"
    path.write_text(text)
    return path


def test_paths_resolve_against_the_job_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    job = load_job(write_job(tmp_path))
    assert job.input.path == (tmp_path / "data" / "in.jsonl").resolve()
    assert job.output.path.resolve() == (tmp_path / "out" / "x").resolve()
    assert job.limits.concurrency == 8
    assert job.json_mode and job.flatten
    # the schema file is inlined into the request exactly as the API must receive it
    sent = job.request["generationConfig"]["responseSchema"]
    assert sent["properties"]["label"]["enum"] == ["a", "b"]


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        pytest.param(("concurrency = 8", "concurrency = 0"), "limits.concurrency", id="zero-concurrency"),
        pytest.param(("concurrency = 8", "concurency = 8"), "limits.concurency", id="typo"),
        pytest.param(("concurrency = 8", "grace_s = -1"), "limits.grace_s", id="negative-grace"),
        pytest.param(
            ("concurrency = 8", "concurrency = 8\nquota_window_s = 120"),
            "limits.quota_window_s",
            id="window-over-a-minute",
        ),
        pytest.param(('model = "gemini-2.5-flash"\n', ""), "model", id="no-model"),
        pytest.param(("[request]", "[request]\ncontents = []"), "request.contents", id="contents-in-request"),
        pytest.param(
            ('keep_columns = ["review"]', 'keep_columns = ["status"]'), "output.keep_columns", id="keep-collides"
        ),
        pytest.param(
            ('keep_columns = ["review"]', 'keep_columns = ["out_label"]'), "output.keep_columns", id="keep-vs-typed"
        ),
        pytest.param(('id_field = "id"', 'id_field = "id"\nprompt_field = "p"'), "input", id="two-prompts"),
    ],
)
def test_bad_job_names_file_and_key(tmp_path: Path, edit: tuple[str, str], key: str) -> None:
    path = write_job(tmp_path, JOB.replace(*edit))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert str(path) in str(caught.value)
    assert caught.value.key == key


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write_job(tmp_path, "model = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job(path)


def test_bad_schema_is_rejected_with_its_pointer(tmp_path: Path) -> None:
    bad = '{"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "enum": ["1"]}}, "required": ["m"]}'
    with pytest.raises(SchemaError) as caught:
        load_job(write_job(tmp_path, schema=bad))
    assert "s.json" in str(caught.value)
    assert caught.value.pointer.startswith("/")


def test_overrides_are_revalidated(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path))
    changed = job.with_overrides(model="gemini-2.5-pro", limits={"concurrency": 3}, output={"path": tmp_path / "o"})
    assert (changed.model, changed.limits.concurrency, changed.output.path) == ("gemini-2.5-pro", 3, tmp_path / "o")
    assert changed.schema_ is job.schema_
    with pytest.raises(ConfigError, match="concurrency"):
        job.with_overrides(limits={"concurrency": -1})


def test_fingerprint_follows_what_answers_depend_on(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path))
    assert job.fingerprint() == job.with_overrides(limits={"concurrency": 2}).fingerprint()
    assert job.fingerprint() != job.with_overrides(model="gemini-2.5-pro").fingerprint()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "jobs").glob("*.toml")))
def test_shipped_jobs_load(name: str) -> None:
    load_job(ROOT / "jobs" / name)


# --- mode, the Batch API and Flex ------------------------------------------------------------------------------


def edited(top: str = "", request: str = "", sections: str = "", limits: str = "") -> str:
    """JOB with top-level keys, [request] keys, whole sections (before [limits]) and [limits] keys added."""
    text = top + JOB.replace("[request]\n", "[request]\n" + request)
    return text.replace("[limits]\n", sections + "[limits]\n" + limits)


def test_a_job_is_online_unless_it_says_batch(tmp_path: Path) -> None:
    """`mode` picks the carrier; `[batch]` holds its settings, which do not change the job's identity."""
    job = load_job(write_job(tmp_path))
    assert job.mode == "online" and job.batch.deadline_s is None and job.batch.max_file_mb == 1900
    text = edited(top='mode = "batch"\n', sections='[batch]\ndeadline = "1h30m"\nfallback = "flex"\n\n')
    batch = load_job(write_job(tmp_path, text))
    assert batch.mode == "batch" and batch.batch.fallback == "flex"
    assert batch.batch.deadline_s == 5400
    assert batch.fingerprint() == job.fingerprint()
    assert job.with_overrides(mode="batch", batch={"deadline": "45s"}).batch.deadline_s == 45


@pytest.mark.parametrize("deadline", ["6", "6 hours", "", "h", "-1h"])
def test_a_deadline_is_a_duration(tmp_path: Path, deadline: str) -> None:
    text = edited(sections=f'[batch]\ndeadline = "{deadline}"\n\n')
    with pytest.raises(ConfigError, match="not a duration") as info:
        load_job(write_job(tmp_path, text))
    assert info.value.key == "batch.deadline"


@pytest.mark.parametrize(
    ("text", "timeout"),
    [
        pytest.param(edited(), 120.0, id="standard"),
        pytest.param(edited(request='serviceTier = "flex"\n'), 1200.0, id="flex"),
        pytest.param(edited(request='serviceTier = "FLEX"\n', limits="timeout_s = 30\n"), 30.0, id="flex-timeout-set"),
        pytest.param(edited(top='mode = "batch"\n'), 120.0, id="batch-falling-back-online"),
        pytest.param(
            edited(top='mode = "batch"\n', sections='[batch]\nfallback = "flex"\n\n'), 1200.0, id="batch-flex"
        ),
    ],
)
def test_flex_calls_get_a_longer_timeout_unless_one_is_set(tmp_path: Path, text: str, timeout: float) -> None:
    """Flex answers take minutes: without `timeout_s` a call that goes to Flex may take 20 minutes."""
    assert load_job(write_job(tmp_path, text)).timeout_s == timeout


def test_an_unknown_service_tier_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown serviceTier 'turbo'") as info:
        load_job(write_job(tmp_path, edited(request='serviceTier = "turbo"\n')))
    assert info.value.key == "request.serviceTier"


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        pytest.param(
            ("temperature = 0.0", "temprature = 0.0"),
            "request.generationConfig.temprature",
            "unknown field (did you mean 'temperature'?)",
            id="generation-config-typo",
        ),
        pytest.param(
            ("temperature = 0.0", "max_output_tokens = 10"),
            "request.generationConfig.max_output_tokens",
            "camelCase: 'maxOutputTokens'",
            id="snake-case",
        ),
        pytest.param(
            ("[request]", "[request]\ntools = [{ googleSerach = {} }]"),
            "request.tools[0].googleSerach",
            "did you mean 'googleSearch'?",
            id="tool-typo",
        ),
        pytest.param(
            ("[request]", "[request]\nsystemInstructions = 'x'"),
            "request.systemInstructions",
            "did you mean 'systemInstruction'?",
            id="request-typo",
        ),
        pytest.param(
            ("concurrency = 8", "concurency = 8"),
            "limits.concurency",
            "unknown key (did you mean 'concurrency'?)",
            id="job-key-typo",
        ),
        pytest.param(("[limits]", "[limit]"), "limit", "unknown key (did you mean 'limits'?)", id="table-typo"),
        pytest.param(
            ("concurrency = 8", "concurrency = 0"), "limits.concurrency", "must be greater than 0, not 0", id="bound"
        ),
        pytest.param(
            ("concurrency = 8", "concurrency = 'many'"),
            "limits.concurrency",
            "must be a whole number, not 'many'",
            id="type",
        ),
        pytest.param(
            ("{review}", "{review"),
            "input.prompt_template",
            "not a usable template: expected '}' before end of string (write {{ and }} for a literal brace)",
            id="unclosed-brace",
        ),
        pytest.param(
            ("{review}", "{}"), "input.prompt_template", "put a column name inside the braces", id="positional"
        ),
        pytest.param(
            ('base_url = "http://127.0.0.1:1"', 'base_url = "127.0.0.1:1"'),
            "base_url",
            "must be an http:// or https:// URL with a host, not '127.0.0.1:1'",
            id="base-url",
        ),
    ],
)
def test_a_mistake_is_named_in_the_job_files_words_with_the_name_it_meant(
    tmp_path: Path, edit: tuple[str, str], key: str, message: str
) -> None:
    """Typos in request fields are caught before the API's 400 (with a "did you mean"), job-key errors read
    like the price file's ("unknown key"), not pydantic's ("Extra inputs are not permitted"), and a template
    with an unclosed brace is a ConfigError, not a ValueError traceback."""
    path = write_job(tmp_path, JOB.replace(*edit))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert caught.value.key == key and str(path) in str(caught.value)
    assert message in str(caught.value)
    assert "Input should" not in str(caught.value) and "Extra inputs" not in str(caught.value)


def test_a_bad_override_is_not_blamed_on_the_job_file(tmp_path: Path) -> None:
    """`--concurrency 0` or `--base-url x` are wrong values given on the command line: the error names the key
    they replace, not the job file (which says something else)."""
    path = write_job(tmp_path)
    job = load_job(path)
    for change, key in (({"limits": {"concurrency": 0}}, "limits.concurrency"), ({"base_url": "x"}, "base_url")):
        with pytest.raises(ConfigError) as caught:
            job.with_overrides(**change)
        assert caught.value.key == key and caught.value.file is None and str(path) not in str(caught.value)


def test_batch_mode_runs_on_the_local_engine_only(tmp_path: Path) -> None:
    """The Batch API does the work of a batch job: there is nothing for a Ray cluster's workers to do."""
    with pytest.raises(ConfigError, match="mode batch runs on the local engine only") as info:
        load_job(write_job(tmp_path, edited(top='mode = "batch"\nengine = "ray"\n')))
    assert info.value.key == "mode"
