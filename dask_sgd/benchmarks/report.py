"""Markdown tables of benchmark results, as docs/benchmarks.md shows them.

Each benchmark prints its table from the results it writes as JSON, with the function that
``tests/test_docs.py`` runs on the committed JSON: a table in the docs is what its raw output
prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from statistics import median
from typing import Any


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], labels: int = 1) -> str:
    """A Markdown table; its first ``labels`` columns left-aligned, the figures right-aligned."""
    align = ["---"] * labels + ["---:"] * (len(header) - labels)
    lines = [header, align, *([str(cell) for cell in row] for row in rows)]
    return "".join(f"| {' | '.join(line)} |\n" for line in lines)


def save_and_print(results: Any, path: str | None, table: Callable[[Any], str]) -> None:
    """Write ``results`` as JSON to ``path`` (if one is given), and print ``table(results)``:
    a benchmark's ``--json`` output and the table the docs show from it."""
    if path:
        with open(path, "w") as file:
            json.dump(results, file, indent=1)
    print(table(results))


def median_and_range(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """'median (min–max)' of ``values`` times ``scale``, as the engine's tables show them."""
    scaled = [value * scale for value in values]
    return f"{median(scaled):.{digits}f} ({min(scaled):.{digits}f}–{max(scaled):.{digits}f})"


def best_of_interleaved(contenders: dict[str, Callable[[], float]], repeats: int) -> dict:
    """Each contender's rate, ``repeats`` times, the contenders taken in turn (a load that
    comes and goes reaches each), and the best of each."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            rates[name].append(run())
    return {"samples_per_second": rates, "best": {name: max(v) for name, v in rates.items()}}


def rates_table(best: dict[str, float], baseline: str, unit: str = "M", digits: int = 2) -> str:
    """Each contender's best rate in ``unit`` ("k" or "M") samples per second, and its ratio
    to the rate of the contender ``baseline``."""
    scale = {"k": 1e3, "M": 1e6}[unit]
    return markdown_table(
        ["contender", f"{unit} samples/s", "/ plain loop"],
        [[name, f"{rate / scale:.{digits}f}", f"{rate / best[baseline]:.2f}"]
         for name, rate in best.items()],
    )  # fmt: skip
