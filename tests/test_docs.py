"""The documentation: the API reference matches the docstrings, every link resolves, and
every table in docs/benchmarks.md is its raw output."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from dask_sgd._api_reference import render

pytestmark = pytest.mark.in_process

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
BENCHMARKS = DOCS / "benchmarks.md"


def test_the_api_reference_is_rendered_from_the_current_docstrings():
    assert (ROOT / "docs" / "api.md").read_text() == render(), (
        "docs/api.md is stale: python -m dask_sgd._api_reference > docs/api.md"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


#: the soak's raw outputs beside its table in benchmarks.md: the code and the AMM's period
SOAK_OUTPUTS = {
    "soak-before.json": ("before (1afd074)", "2s"),
    "soak-after.json": ("after", "2s"),
    "soak-before-4-workers-amm-100ms.json": ("before (d7d6b66)", "100ms"),
    "soak-after-4-workers-amm-100ms.json": ("after", "100ms"),
}


def test_the_soak_table_is_its_raw_output():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    for name, (code, amm) in SOAK_OUTPUTS.items():
        for run in json.loads((ROOT / "docs" / "images" / name).read_text()):
            counts = (
                run["fits"], run["deaths"], run["recoveries"], run["shard_moves"],
                len(run["failed_fits"]), len(run["error_lines"]),
            )  # fmt: skip
            row = f"| {code} | {run['workers']} | {amm} | {run['minutes']:.1f} | "
            row += " | ".join(map(str, counts)) + " |"
            assert row in page, f"{name}: no row {row!r} in benchmarks.md"


# -- every table in benchmarks.md is its raw output ---------------------------------------------
#
# Each table is preceded by a comment naming its raw output, relative to docs/, and what
# checks it:
#
#     <!-- table: results/a.json [results/b.json ...] via dask_sgd.benchmarks.m:function -->
#         the table is exactly what the benchmark's function prints from those JSON files;
#     <!-- table: results/a.md -->
#         (a benchmark's own Markdown output) each of the table's lines is a line of it;
#     <!-- table: images/a.json ... via test_name -->
#         a test of this module compares them.

SOURCE = re.compile(r"<!-- table: (?P<paths>[^>]+?)(?: via (?P<via>[\w.:]+))? -->")


def benchmark_tables() -> list[tuple[int, re.Match | None, list[str]]]:
    """(line number, source comment, lines) of each table in benchmarks.md."""
    lines = BENCHMARKS.read_text().splitlines()
    tables, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        above = [line.strip() for line in lines[:start] if line.strip()]
        source = SOURCE.fullmatch(above[-1]) if above else None
        tables.append((start + 1, source, lines[start:i]))
    return tables


TABLES = benchmark_tables()


def test_every_benchmark_table_names_its_raw_output():
    unnamed = [line for line, source, _ in TABLES if source is None]
    assert not unnamed, f"benchmarks.md: tables without a '<!-- table: ... -->' line: {unnamed}"
    missing = [
        path for _, source, _ in TABLES for path in source["paths"].split()
        if not (DOCS / path).exists()
    ]  # fmt: skip
    assert not missing, f"benchmarks.md names raw outputs that are not there: {missing}"


@pytest.mark.parametrize(
    "table", [t for t in TABLES if t[1] is not None], ids=lambda table: f"line {table[0]}"
)
def test_each_benchmark_table_is_what_its_raw_output_prints(table):
    line, source, lines = table
    paths = [DOCS / path for path in source["paths"].split()]
    via = source["via"]
    if via and ":" in via:
        module, function = via.split(":")
        documents = [json.loads(path.read_text()) for path in paths]
        printed = getattr(importlib.import_module(module), function)(*documents)
        assert lines == [row for row in printed.splitlines() if row.startswith("|")], (
            f"line {line}: not what {via} prints from {source['paths']}"
        )
    elif via:
        assert via.startswith("test_") and callable(globals().get(via)), (
            f"line {line}: no test {via} in {__name__}"
        )
    else:
        assert all(path.suffix == ".md" for path in paths), (
            f"line {line}: a JSON source needs the function that prints the table ('via')"
        )
        raw = {row for path in paths for row in path.read_text().splitlines()}
        missing = [row for row in lines if row not in raw]
        assert not missing, f"line {line}: rows not in {source['paths']}: {missing}"
