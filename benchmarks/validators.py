"""Validator benchmark: what validating one output costs, and why batchgen validates with jsonschema-rs.

One run measures, on a realistic labeling schema (written as a Gemini responseSchema and converted the way a
job converts it), the per-row time of jsonschema-rs, fastjsonschema and jsonschema on the same valid and
invalid outputs, checks that they agree with the expected verdicts, and runs a few draft 2020-12 probes that
tell the libraries apart on correctness. It also times `ResponseSchema.validate`, the runner's per-row call.

    python benchmarks/validators.py        # prints a table; main() returns the figures as a dict
"""

from __future__ import annotations

import copy
import importlib.metadata
import random
import time
from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema
import jsonschema_rs

from batchgen.schema.dialect import Dialect
from batchgen.schema.openapi import check_openapi_schema, openapi_to_json_schema
from batchgen.schema.response import ResponseSchema

VALID_ROWS = 1000
INVALID_ROWS = 120  # ten of each way to go wrong
MIN_PASSES = 3
BUDGET_S = 0.2  # per measurement: fast validators get many passes, the slow one its minimum
SEED = 20261125

SENTIMENTS = ["positive", "negative", "neutral", "mixed"]
TOPICS = ["billing", "shipping", "returns", "account", "product_quality", "pricing", "support", "other"]
ENTITY_TYPES = ["person", "organization", "product", "location", "date", "money"]

# A support-ticket labeling schema of the kind batch jobs run: enums, a bounded enum list, an array of
# objects, bounded numbers, a pattern, and nullable fields.
LABELING: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "sentiment": {"type": "STRING", "enum": SENTIMENTS},
        "topics": {
            "type": "ARRAY",
            "items": {"type": "STRING", "enum": TOPICS},
            "minItems": 1,
            "maxItems": 3,
        },
        "entities": {
            "type": "ARRAY",
            "maxItems": 20,
            "items": {
                "type": "OBJECT",
                "properties": {
                    "text": {"type": "STRING", "minLength": 1},
                    "type": {"type": "STRING", "enum": ENTITY_TYPES},
                    "start": {"type": "INTEGER", "minimum": 0},
                    "end": {"type": "INTEGER", "minimum": 0},
                },
                "required": ["text", "type", "start", "end"],
            },
        },
        "confidence": {"type": "NUMBER", "minimum": 0, "maximum": 1},
        "language": {"type": "STRING", "pattern": "^[a-z]{2}$"},
        "is_spam": {"type": "BOOLEAN"},
        "summary": {"type": "STRING", "nullable": True, "maxLength": 280},
        "escalate_to": {"type": "STRING", "nullable": True, "enum": ["tier2", "legal", "billing_team"]},
    },
    "required": ["sentiment", "topics", "entities", "confidence", "language", "is_spam", "summary"],
    "propertyOrdering": ["sentiment", "topics", "entities", "confidence", "language", "is_spam", "summary"],
}


def valid_output(rng: random.Random) -> dict[str, Any]:
    entities = []
    for _ in range(rng.randint(0, 6)):
        start = rng.randint(0, 500)
        entities.append(
            {
                "text": "ACME Corp",
                "type": rng.choice(ENTITY_TYPES),
                "start": start,
                "end": start + rng.randint(1, 30),
            }
        )
    output: dict[str, Any] = {
        "sentiment": rng.choice(SENTIMENTS),
        "topics": rng.sample(TOPICS, rng.randint(1, 3)),
        "entities": entities,
        "confidence": round(rng.random(), 3),
        "language": rng.choice(["en", "de", "fr", "ja"]),
        "is_spam": rng.random() < 0.05,
        "summary": None if rng.random() < 0.3 else "Customer reports a late delivery and asks for a refund.",
    }
    if rng.random() < 0.5:
        output["escalate_to"] = rng.choice(["tier2", "legal", None])
    return output


# Each turns a valid output into one the schema rejects, the way model outputs go wrong.
BREAKERS: list[Callable[[dict[str, Any]], None]] = [
    lambda o: o.update(sentiment="very positive"),
    lambda o: o.pop("confidence"),
    lambda o: o.update(confidence=1.5),
    lambda o: o.update(topics=["billing", "shipping", "returns", "other"]),
    lambda o: o.update(topics=[]),
    lambda o: o["entities"].append({"text": "x", "type": "animal", "start": 0, "end": 1}),
    lambda o: o["entities"].append({"text": "x", "type": "person", "start": -1, "end": 1}),
    lambda o: o.update(language="english"),
    lambda o: o.update(is_spam="no"),
    lambda o: o.update(summary="x" * 400),
    lambda o: o.update(escalate_to="ceo"),
    lambda o: o.update(confidence="0.9"),
]


def instances(rng: random.Random) -> tuple[list[Any], list[Any]]:
    valid = [valid_output(rng) for _ in range(VALID_ROWS)]
    invalid = []
    for index in range(INVALID_ROWS):
        output = valid_output(rng)
        BREAKERS[index % len(BREAKERS)](output)
        invalid.append(output)
    return valid, invalid


def _fastjsonschema_check(schema: dict[str, Any]) -> Callable[[Any], bool]:
    # fastjsonschema knows drafts 4, 6 and 7 only; it reads a 2020-12 schema with draft-7 rules.
    validate = fastjsonschema.compile(schema, use_formats=False, use_default=False)

    def is_valid(instance: Any) -> bool:
        try:
            validate(instance)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return is_valid


def _jsonschema_rs_check(schema: dict[str, Any]) -> Callable[[Any], bool]:
    check: Callable[[Any], bool] = jsonschema_rs.validator_for(schema, validate_formats=False, offline=True).is_valid
    return check


def _jsonschema_check(schema: dict[str, Any]) -> Callable[[Any], bool]:
    check: Callable[[Any], bool] = jsonschema.validators.validator_for(schema)(schema).is_valid
    return check


LIBRARIES: dict[str, tuple[str, Callable[[dict[str, Any]], Callable[[Any], bool]]]] = {
    "jsonschema-rs": ("jsonschema_rs", _jsonschema_rs_check),
    "fastjsonschema": ("fastjsonschema", _fastjsonschema_check),
    "jsonschema": ("jsonschema", _jsonschema_check),
}

# Draft 2020-12 behaviour a responseJsonSchema can rely on: (what, schema, instance, expected verdict).
PROBES: list[tuple[str, dict[str, Any], Any, bool]] = [
    ("prefixItems", {"prefixItems": [{"type": "string"}, {"type": "integer"}]}, ["a", "b"], False),
    ("items after prefixItems", {"prefixItems": [{"type": "string"}], "items": False}, ["a"], True),
    ("$anchor reference", {"$defs": {"n": {"$anchor": "num", "type": "number"}}, "$ref": "#num"}, "x", False),
    (
        "$ref with siblings",
        {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2},
        "abc",
        False,
    ),
    ("dependentRequired", {"dependentRequired": {"a": ["b"]}}, {"a": 1}, False),
    (
        "unevaluatedProperties",
        {"properties": {"a": {}}, "unevaluatedProperties": False},
        {"a": 1, "b": 2},
        False,
    ),
    ("integer-valued float", {"type": "integer"}, 1.0, True),
]


def probe(check: Callable[[dict[str, Any]], Callable[[Any], bool]]) -> list[str]:
    """The probes a library gets wrong (a schema it cannot compile counts as wrong)."""
    failed = []
    for name, schema, instance, expected in PROBES:
        try:
            verdict = check({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})(instance)
        except Exception:  # any library's compile error: the probe fails
            verdict = not expected
        if verdict is not expected:
            failed.append(name)
    return failed


def per_row_us(call: Callable[[Any], object], rows: list[Any]) -> float:
    """Best timed pass over `rows` (after an untimed warm-up), in microseconds per row.

    Best-of, because on a shared machine the noise only ever adds time.
    """
    for row in rows:
        call(row)
    best, spent, passes = float("inf"), 0.0, 0
    while passes < MIN_PASSES or spent < BUDGET_S:
        start = time.perf_counter()
        for row in rows:
            call(row)
        elapsed = time.perf_counter() - start
        best, spent, passes = min(best, elapsed), spent + elapsed, passes + 1
    return best / len(rows) * 1e6


def measure_library(name: str, schema: dict[str, Any], valid: list[Any], invalid: list[Any]) -> dict[str, Any]:
    distribution, build = LIBRARIES[name]
    start = time.perf_counter()
    is_valid = build(copy.deepcopy(schema))
    compile_ms = (time.perf_counter() - start) * 1e3
    mismatches = sum(not is_valid(row) for row in valid) + sum(is_valid(row) for row in invalid)
    return {
        "version": importlib.metadata.version(distribution),
        "compile_ms": round(compile_ms, 3),
        "valid_us_per_row": round(per_row_us(is_valid, valid), 3),
        "invalid_us_per_row": round(per_row_us(is_valid, invalid), 3),
        "mismatches": mismatches,
        "draft_2020_12_probes_failed": probe(build),
    }


def batch_us_per_row(call: Callable[[list[Any]], object], rows: list[Any]) -> float:
    """Best of MIN_PASSES calls on the whole batch (after a warm-up call), in microseconds per row."""
    call(rows)
    best = float("inf")
    for _ in range(MIN_PASSES):
        start = time.perf_counter()
        call(rows)
        best = min(best, time.perf_counter() - start)
    return best / len(rows) * 1e6


def measure_batchgen(valid: list[Any], invalid: list[Any]) -> dict[str, Any]:
    """The runner's per-row call: jsonschema-rs `is_valid`, plus a message with a pointer when it fails.

    Also the writer's per-part call, `arrow_columns`, which turns outputs into the typed `out_` columns.
    """
    check_openapi_schema(LABELING, file="labeling")
    schema = ResponseSchema(Dialect.OPENAPI, LABELING, openapi_to_json_schema(LABELING), "labeling")
    wrong = sum(schema.validate(row) is not None for row in valid) + sum(
        schema.validate(row) is None for row in invalid
    )
    return {
        "valid_us_per_row": round(per_row_us(schema.validate, valid), 3),
        "invalid_us_per_row": round(per_row_us(schema.validate, invalid), 3),
        "mismatches": wrong,
        "arrow_columns_us_per_row": round(batch_us_per_row(schema.arrow_columns, valid), 3),
    }


def print_table(figures: dict[str, Any]) -> None:
    libraries = figures["libraries"]
    fastest = libraries[figures["fastest"]]["valid_us_per_row"]
    print(f"labeling schema: {VALID_ROWS} valid + {INVALID_ROWS} invalid outputs, best pass")
    header = ("library", "version", "valid µs/row", "invalid µs/row", "vs fastest", "compile ms", "wrong")
    print("{:<16}{:<10}{:>14}{:>16}{:>12}{:>12}{:>7}  2020-12 probes failed".format(*header))
    for name, row in libraries.items():
        failed = ", ".join(row["draft_2020_12_probes_failed"]) or "none"
        print(
            f"{name:<16}{row['version']:<10}{row['valid_us_per_row']:>14.2f}{row['invalid_us_per_row']:>16.2f}"
            f"{row['valid_us_per_row'] / fastest:>11.1f}x{row['compile_ms']:>12.2f}{row['mismatches']:>7}  " + failed
        )
    ours = figures["batchgen_validate"]
    print(
        f"ResponseSchema.validate (chosen: {figures['chosen']}): {ours['valid_us_per_row']:.2f} µs per valid "
        f"row, {ours['invalid_us_per_row']:.2f} µs per invalid row (with its message); typed columns "
        f"{ours['arrow_columns_us_per_row']:.2f} µs per row"
    )


def main() -> dict[str, Any]:
    """Run the benchmark, print a table and return the figures."""
    valid, invalid = instances(random.Random(SEED))
    schema = openapi_to_json_schema(LABELING)
    libraries = {name: measure_library(name, schema, valid, invalid) for name in LIBRARIES}
    figures = {
        "benchmark": "validators",
        "schema": "labeling (responseSchema converted to JSON Schema 2020-12)",
        "rows": {"valid": VALID_ROWS, "invalid": INVALID_ROWS},
        "libraries": libraries,
        "fastest": min(libraries, key=lambda name: libraries[name]["valid_us_per_row"]),
        "agree": all(row["mismatches"] == 0 for row in libraries.values()),
        "chosen": "jsonschema-rs",
        "batchgen_validate": measure_batchgen(valid, invalid),
    }
    print_table(figures)
    return figures


if __name__ == "__main__":
    main()
