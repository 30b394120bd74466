"""The documentation: the API reference matches the docstrings, and every link resolves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dask_sgd._api_reference import render

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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
    "soak-before.json": ("before (1afd074)", "2 s"),
    "soak-after.json": ("after", "2 s"),
    "soak-before-4-workers-amm-100ms.json": ("before (d7d6b66)", "100 ms"),
    "soak-after-4-workers-amm-100ms.json": ("after", "100 ms"),
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
