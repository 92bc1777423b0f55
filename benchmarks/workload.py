"""The benchmark's one workload: generated review rows, and the request every contender sends for a row.

All three contenders (the bare aiohttp loop, the google-genai SDK loop and batchgen) send the same request for
the same row: the demo's sentiment job in JSON mode with its responseSchema, so the local server does the same
work for each, and only the client side differs.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schemas" / "sentiment.json"
MODEL = "gemini-2.5-flash"
API_KEY = "fake-key"  # the local server's default key; nothing real
KEY_ENV = "BATCHGEN_BENCH_KEY"
PROMPT = "Classify the sentiment of this product review and list the aspects it mentions: {review}"
SYSTEM = "You are a careful annotator. Answer with JSON only."

_VOCABULARY = (
    "battery screen delivery price quality support fast slow broken great terrible okay fine loves hates works "
    "arrived late early box charger strap sound camera fits small large cheap pricey refund again never always"
)
NON_STR = orjson.OPT_NON_STR_KEYS
_SEED = 20261125
_PARQUET_GROUP = 65536


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed, as batchgen's CLI and the local server do."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(SCHEMA_FILE.read_bytes())
    return loaded


def generation_config() -> dict[str, Any]:
    return {
        "temperature": 0.0,
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 0},
        "responseSchema": schema(),  # last, where batchgen's job loader puts the schema it read from its file
    }


def request_body(review: str) -> bytes:
    """The generateContent body for one row, byte for byte what the job below makes batchgen send."""
    return orjson.dumps(
        {
            "contents": [{"role": "user", "parts": [{"text": PROMPT.format(review=review)}]}],
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "generationConfig": _generation_config(),
        }
    )


_generation_config = functools.cache(generation_config)


def rows(count: int) -> Iterator[dict[str, Any]]:
    """`count` review rows: id, review (20-40 words), stars; the same rows for the same count."""
    rng = random.Random(_SEED)
    words = _VOCABULARY.split()
    for index in range(count):
        review = " ".join(rng.choice(words) for _ in range(rng.randint(20, 40)))
        yield {"id": f"r{index:07d}", "review": review, "stars": rng.randint(1, 5)}


def write_jsonl(path: Path, count: int) -> Path:
    if not path.exists():
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            for row in rows(count):
                handle.write(orjson.dumps(row) + b"\n")
        temporary.rename(path)
    return path


def write_parquet(path: Path, count: int) -> Path:
    if not path.exists():
        schema = pa.schema([("id", pa.string()), ("review", pa.string()), ("stars", pa.int64())])
        temporary = path.with_suffix(".tmp")
        with pq.ParquetWriter(temporary, schema) as writer:
            batch: list[dict[str, Any]] = []
            for row in rows(count):
                batch.append(row)
                if len(batch) == _PARQUET_GROUP:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        temporary.rename(path)
    return path


def read_reviews(path: Path) -> list[tuple[str, str]]:
    """(id, review) of every row of a JSONL input, for the contenders that are not batchgen."""
    with path.open("rb") as handle:
        return [(row["id"], row["review"]) for row in map(orjson.loads, handle)]


def write_job(folder: Path, *, input_path: Path, output: Path, concurrency: int) -> Path:
    """A batchgen job file for the workload (base_url is given on the command line)."""
    job = folder / f"job-c{concurrency}.toml"
    generation = orjson.dumps(generation_config() | {"responseSchema": str(SCHEMA_FILE)}).decode()
    job.write_text(
        f"""model = "{MODEL}"
base_url = "http://127.0.0.1:9"
api_key_env = "{KEY_ENV}"

[input]
path = "{input_path}"
id_field = "id"
prompt_template = "{PROMPT}"

[request]
systemInstruction = {{ parts = [{{ text = "{SYSTEM}" }}] }}
generationConfig = {_toml_inline(orjson.loads(generation))}

[limits]
concurrency = {concurrency}

[output]
path = "{output}"
keep_columns = ["stars"]
"""
    )
    return job


def _toml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return repr(value)
