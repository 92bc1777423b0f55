"""The package's layers (docs/architecture.md): imports point down, never up or sideways."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "batchgen"

# Each unit (a top-level module or a sub-package) and its layer, from the shared values up to the edges.
LAYERS: dict[str, int] = {
    "errors": 0,
    "records": 1,
    "secret": 1,
    "gemini": 2,
    "schema": 2,
    "input": 3,
    "results": 4,
    "job": 5,
    "online": 6,
    "batch": 6,
    "console": 6,
    "report": 7,
    "pipeline": 8,
    "distributed": 9,
    "api": 10,
    "cli": 11,
    "__init__": 11,
    "__main__": 12,
}
# The local server is an independent implementation of the wire format: only the edges may start it.
STANDALONE = "fakeserver"
MAY_START_THE_SERVER = frozenset({"api", "cli"})


def unit_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    """The batchgen units a module imports, at any depth of the module (lazy imports count too)."""
    units: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "batchgen" else [f"batchgen.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        units.update(name.split(".")[1] for name in names if name.startswith("batchgen."))
    return units


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(path) for path in MODULES} - {STANDALONE}
    assert units == set(LAYERS), "add the new unit to LAYERS and to docs/architecture.md"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    unit = unit_of(path)
    for other in imported_units(path) - {unit}:
        if unit == STANDALONE:
            pytest.fail(f"the local server imports batchgen.{other}: it must stay independent of the client")
        if other == STANDALONE:
            assert unit in MAY_START_THE_SERVER, f"{unit} starts the local server; only the edges may"
            continue
        assert LAYERS[other] < LAYERS[unit], f"{unit} (layer {LAYERS[unit]}) imports {other} (layer {LAYERS[other]})"
