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
        pytest.param(("[request]", "[request]\ncontents = []"), "request", id="contents-in-request"),
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
