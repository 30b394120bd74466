"""The documentation: the API reference matches the docstrings, and every link resolves."""

from __future__ import annotations

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
