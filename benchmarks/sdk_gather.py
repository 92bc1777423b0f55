"""Contender `sdk`: what users write today. google-genai's async client, a semaphore, gather, pyarrow at the end.

python -m benchmarks.sdk_gather URL INPUT.jsonl CONCURRENCY OUT.parquet   # prints {"rows", "ok"} as JSON
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from google import genai
from google.genai import types

from benchmarks.workload import API_KEY, MODEL, PROMPT, SYSTEM, read_reviews, run_loop, schema


async def run(url: str, reviews: list[tuple[str, str]], concurrency: int) -> list[dict[str, Any]]:
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=url, api_version="v1beta"))
    config = types.GenerateContentConfig(
        system_instruction=SYSTEM,
        temperature=0.0,
        response_mime_type="application/json",
        response_schema=schema(),
        thinking_config=types.ThinkingConfig(thinking_budget=0),
    )
    semaphore = asyncio.Semaphore(concurrency)

    async def one(row_id: str, review: str) -> dict[str, Any]:
        async with semaphore:
            response = await client.aio.models.generate_content(
                model=MODEL, contents=PROMPT.format(review=review), config=config
            )
        usage = response.usage_metadata
        return {
            "id": row_id,
            "text": response.text,
            "finish_reason": response.candidates[0].finish_reason if response.candidates else None,
            "prompt_token_count": usage.prompt_token_count if usage else None,
            "candidates_token_count": usage.candidates_token_count if usage else None,
            "total_token_count": usage.total_token_count if usage else None,
        }

    try:
        return await asyncio.gather(*(one(row_id, review) for row_id, review in reviews))
    finally:
        await client.aio.aclose()


def main(argv: list[str]) -> None:
    url, input_path, concurrency, output = argv[0], Path(argv[1]), int(argv[2]), Path(argv[3])
    reviews = read_reviews(input_path)
    if len(argv) > 4:
        reviews = reviews[: int(argv[4])]
    results = run_loop(run(url, reviews, concurrency))
    for result in results:
        result["finish_reason"] = str(result["finish_reason"]) if result["finish_reason"] else None
    pq.write_table(pa.Table.from_pylist(results), output, compression="zstd")
    ok = sum(1 for r in results if r["text"])
    print(orjson.dumps({"rows": len(results), "ok": ok}).decode())


if __name__ == "__main__":
    main(sys.argv[1:])
