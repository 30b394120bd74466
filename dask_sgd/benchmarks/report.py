"""Markdown tables of benchmark results, as docs/benchmarks.md shows them.

Each benchmark prints its table from the results it writes as JSON, with the function that
``tests/test_docs.py`` runs on the committed JSON: a table in the docs is what its raw output
prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import median


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], labels: int = 1) -> str:
    """A Markdown table; its first ``labels`` columns left-aligned, the figures right-aligned."""
    align = ["---"] * labels + ["---:"] * (len(header) - labels)
    lines = [header, align, *([str(cell) for cell in row] for row in rows)]
    return "".join(f"| {' | '.join(line)} |\n" for line in lines)


def median_and_range(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """'median (min–max)' of ``values`` times ``scale``, as the engine's tables show them."""
    scaled = [value * scale for value in values]
    return f"{median(scaled):.{digits}f} ({min(scaled):.{digits}f}–{max(scaled):.{digits}f})"
