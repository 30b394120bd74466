"""The examples and the README's main job run, and report sensible numbers."""

from __future__ import annotations

import runpy
from pathlib import Path

from dask_sgd import demo

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_quickstart_example():
    scores = runpy.run_path(str(EXAMPLES / "quickstart.py"))["main"]()
    assert scores["digits accuracy"] > 0.9
    assert scores["diabetes R²"] > 0.3


def test_demo_at_small_size(capsys):
    """On any free port: another cluster on this machine may hold the dashboard's 8787."""
    size = ["--n-samples", "22000", "--n-features", "20", "--epochs", "2"]
    report = demo.main([*size, "--dashboard-address", ":0"])
    assert report["fit_seconds"] > 0
    assert report["held_out_accuracy"] > 0.7
    assert report["samples_per_second"] > 0
    assert "held-out log-loss" in capsys.readouterr().out
