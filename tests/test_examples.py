"""The examples and the README's main job run, and report sensible numbers."""

from __future__ import annotations

import io
import runpy
import sys
from pathlib import Path

import pytest

from dask_sgd import demo

EXAMPLES = Path(__file__).parents[1] / "examples"
SIZE = ["--n-samples", "22000", "--n-features", "20", "--epochs", "2"]


class Terminal(io.StringIO):
    """stdout and stderr of a terminal: one screen, on which a bar can redraw in place."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        """The lines left on the screen: a carriage return moves back to the line's start,
        where the next text overwrites what was there."""
        lines = []
        for written in self.getvalue().split("\n"):
            line = ""
            for part in written.split("\r"):
                line = part + line[len(part) :]
            lines.append(line.rstrip())
        return lines


def test_quickstart_example():
    scores = runpy.run_path(str(EXAMPLES / "quickstart.py"))["main"]()
    assert scores["digits accuracy"] > 0.9
    assert scores["diabetes R²"] > 0.3


def test_demo_at_small_size(monkeypatch):
    """On any free port: another cluster on this machine may hold the dashboard's 8787.

    On a terminal the demo shows one progress display, the bar, with the epoch's loss in
    its postfix, and its summary after the bar; no line of scikit-learn's ``verbose``.
    """
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    report = demo.main([*SIZE, "--dashboard-address", ":0"])
    assert report["fit_seconds"] > 0
    assert report["held_out_accuracy"] > 0.7
    assert report["samples_per_second"] > 0

    screen = terminal.screen()
    bars = [i for i, line in enumerate(screen) if line.startswith("fit:")]
    assert len(bars) == 1, screen  # one bar, redrawn in place
    assert "2/2" in screen[bars[0]] and "loss=" in screen[bars[0]], screen
    assert not any("-- Epoch" in line for line in screen), screen
    summary = [i for i, line in enumerate(screen) if line.startswith("held-out log-loss")]
    assert summary and summary[0] > bars[0], screen


@pytest.mark.timeout(60)
def test_text_hashing_example():
    """Hashed text in a Dask bag, trained on its CSR blocks: far above chance (0.5)."""
    scores = runpy.run_path(str(EXAMPLES / "text_hashing.py"))["main"]()
    assert scores["held-out accuracy"] > 0.85
