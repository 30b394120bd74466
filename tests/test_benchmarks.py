"""The benchmarks run end to end at a small size (``--quick``), and time first fits."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest

from dask_sgd.benchmarks import engine_efficiency, tta, w2, w3
from dask_sgd.benchmarks.memory import worker_shares
from dask_sgd.cli import main as cli_main


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore::FutureWarning")  # dask-ml reads deprecated Dask config
def test_time_to_accuracy_quick_run_writes_every_contender(tmp_path):
    results = tta.main(["--quick", "--repeats", "1", "--output", str(tmp_path)])
    rows = results["rows"]
    assert len(rows) == len(tta.contenders(quick=True))
    names = {row["contender"] for row in rows}
    assert {f"dask_sgd {strategy}" for strategy in tta.STRATEGIES} <= names
    assert "dask-ml Incremental(SGDClassifier)" in names
    assert results["target_log_loss"] == pytest.approx(
        tta.TARGET_RATIO * results["reference_log_loss"]
    )
    by_label = {(row["contender"], row["setting"]): row for row in rows}
    # the reference's own solver, unregularized enough, reaches the target it defines
    assert by_label["sklearn LogisticRegression", "tuned: max_iter"]["reached"]
    for row in rows:  # a time only where the target was reached, else the best metric
        assert row["reached"] == (row["best_log_loss"] <= results["target_log_loss"])
        assert ("seconds_to_target" in row) == row["reached"]
        # dask_sgd's refit on data already seen: beside a time to target, never instead
        refit = row["reached"] and row["contender"].startswith("dask_sgd")
        assert ("refit_seconds" in row) == refit
        if refit:
            assert 0 < row["refit_seconds_min"] <= row["refit_seconds"] <= row["refit_seconds_max"]
    saved = json.loads((tmp_path / "tta.json").read_text())
    assert [row["contender"] for row in saved["rows"]] == [row["contender"] for row in rows]
    table = (tmp_path / "tta.md").read_text()
    assert table.count("\n| dask_sgd ") == sum(r["contender"].startswith("dask_sgd") for r in rows)
    assert "not reached" in table or all(row["reached"] for row in rows)
    assert "| refit on data already seen, s (median [min, max]) |" in table
    assert (tmp_path / "tta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(180)
def test_mlp_quick_run_trains_every_contender_to_an_accuracy(tmp_path):
    """W3: scikit-learn's network, PyTorch in one process and DDP in two, and dask_sgd's
    network with every strategy, each a row with a held-out accuracy above chance (0.1)."""
    args = ["--workload", "mlp", "--quick", "--repeats", "1", "--output", str(tmp_path)]
    results = tta.main(args)
    rows = results["rows"]
    assert results["metric"] == "accuracy" and results["target_accuracy"] == w3.TARGET_ACCURACY
    assert len(rows) == len(w3.contenders(quick=True))
    names = {row["contender"] for row in rows}
    assert {"sklearn MLPClassifier", "PyTorch CPU", "PyTorch DDP"} <= names
    assert {f"dask_sgd {strategy}" for strategy in tta.STRATEGIES} <= names
    for row in rows:
        assert "failed" not in row, row
        assert 0.15 < row["best_accuracy"] <= 1, row
        assert row["reached"] == (row["best_accuracy"] >= w3.TARGET_ACCURACY)
        assert all(point["seconds"] > 0 for run in row["runs"] for point in run), row
    # DDP's two 128-row halves of each 256-row minibatch make one process's steps
    by_name = {row["contender"]: row["best_accuracy"] for row in rows}
    assert abs(by_name["PyTorch DDP"] - by_name["PyTorch CPU"]) <= 0.01, by_name
    table = (tmp_path / "tta.md").read_text()
    assert table.startswith("Target: held-out accuracy ≥ 0.94000.")
    assert table == tta.results_table(json.loads((tmp_path / "tta.json").read_text()))
    assert (tmp_path / "tta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)  # about 20 s on a quiet machine
@pytest.mark.filterwarnings("ignore::FutureWarning")  # dask-ml reads deprecated Dask config
def test_sparse_ctr_quick_run_trains_every_strategy_on_csr_blocks(tmp_path):
    """W2: every peer and strategy as a row (a peer that refuses CSR blocks says why); the
    engine's rows carry what a step moves, a minibatch's keys rather than the model."""
    args = ["--workload", "sparse-ctr", "--quick", "--repeats", "1", "--output", str(tmp_path)]
    results = tta.main(args)
    rows, width = results["rows"], results["size"]["n_features"]
    assert results["target_log_loss"] == pytest.approx(
        w2.TARGET_RATIO * results["reference_log_loss"]
    )
    assert results["bayes_log_loss"] < results["reference_log_loss"] < results["base_log_loss"]
    assert results["reference"]["C"] in w2.REFERENCE_C and not results["reference"]["cached"]
    kept = json.loads((tmp_path / "w2-reference.json").read_text())
    assert list(kept) == [results["generator"]]
    assert results["generator"].startswith(w2.generator_key(results["size"]))
    assert len(results["sweeps"]["sklearn_results"]) == len(w2.SKLEARN_GRID)
    ours = [row for row in rows if row["contender"].startswith("dask_sgd")]
    assert len(rows) == len(ours) + 5 and len(ours) == 2 * len(tta.STRATEGIES)
    for row in ours:
        assert "failed" not in row, row
        assert math.isfinite(row["best_log_loss"]) and row["peak_worker_bytes"] > 0, row
        if row["setting"].startswith("tuned"):  # it learns from CSR blocks
            assert row["best_log_loss"] < results["base_log_loss"], row
        for key in ("bytes_pushed_per_step", "bytes_pulled_per_step"):
            assert 0 < row[key] < width * 8 / 4, (row["contender"], key, row[key])
    for row in rows:
        if "failed" in row:  # only a peer may refuse the blocks, and it says why
            assert row["contender"].startswith("dask-ml") and row["failed"], row
        else:
            assert row["reached"] == (row["best_log_loss"] <= results["target_log_loss"])
    table = (tmp_path / "tta.md").read_text()
    assert "| bytes pushed/step | bytes pulled/step | peak worker memory, MiB |" in table
    assert table.count("\n| dask_sgd ") == len(ours)
    assert (tmp_path / "tta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_width_comparison_repeats_each_fit_and_reports_medians(client, tmp_path):
    """``--compare-features`` at a small size, twice (on this module's cluster, not a new one
    per fit): each width's figures are the medians of its runs, every run's time per epoch
    is kept, and the table shows them."""

    @contextlib.contextmanager
    def same_client():
        yield client

    comparison = w2.compare_features(
        same_client, w2.QUICK, [12, 14], ["local"], epochs=2, warm_up=lambda _: None, repeats=2
    )
    assert comparison["repeats"] == 2 and list(comparison["ratios"]) == ["local"]
    widths = comparison["widths"]
    for exponent in (12, 14):
        fit = widths[exponent]["local"]
        runs = fit["seconds_per_epoch_runs"]
        assert len(runs) == 2 and fit["seconds_per_epoch"] == pytest.approx(np.median(runs))
    expected = widths[14]["local"]["seconds_per_epoch"] / widths[12]["local"]["seconds_per_epoch"]
    assert comparison["ratios"]["local"]["seconds_per_epoch"] == pytest.approx(expected)
    table = w2.comparison_table(json.loads(json.dumps(comparison)))  # as read back from JSON
    assert "Medians of 2 fits each" in table and table.count("| local |") == 1
    row = next(line for line in table.splitlines() if line.startswith("| local |"))
    assert row.endswith(
        ", ".join(f"{r:.2f}" for r in widths[14]["local"]["seconds_per_epoch_runs"]) + " |"
    )


@pytest.mark.timeout(180)
def test_scaling_run_at_small_size_times_every_size(tmp_path):
    sizes = ["--factors", "1", "2", "--rows-per-factor", "5000"]
    assert cli_main(["bench", "scaling", *sizes, "--output", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert [row["rows"] for row in saved["rows"]] == [5_000, 10_000]
    for row in saved["rows"]:
        assert row["seconds_per_epoch"] > 0 and row["peak_worker_memory_bytes"] > 0
        assert row["setup_seconds"] > 0  # the fit's wall time beyond its epochs
        assert row["reached"] == (row["best_log_loss"] <= 1.001 * saved["reference_log_loss"])
    assert (tmp_path / "scaling.md").read_text().count("\n| 5,000 |") == 1


@pytest.mark.timeout(60)
def test_each_timed_fit_gets_rows_of_its_own_placed_as_persist_placed_them(client):
    """tta: a copy of the persisted rows under new keys, on the workers of the originals;
    engine: the same rows made again under new keys."""
    data = tta.make_data(client, n_samples=2_200, n_test=200, n_features=5, n_informative=3)
    first, second = tta.fresh_rows(client, data), tta.fresh_rows(client, data)
    assert len({data["dX"].name, first["dX"].name, second["dX"].name}) == 3
    np.testing.assert_array_equal(first["dX"].compute(), data["X"])
    np.testing.assert_array_equal(first["dy"].compute(), data["y"])
    where, copies = client.who_has(data["dX"]), client.who_has(second["dX"])
    for index in range(data["dX"].numblocks[0]):
        assert copies[(second["dX"].name, index, 0)] == where[(data["dX"].name, index, 0)]
    tta.release_rows(client, first)
    tta.release_rows(client, second)

    rows = dict(n_samples=1_000, n_features=4)
    (X1, y1), (X2, y2) = (engine_efficiency.fresh_data(client, rows) for _ in range(2))
    assert X1.name != X2.name and y1.name != y2.name
    shares = worker_shares(client, X1, y1)  # before compute() replicates blocks
    assert sum(shares.values()) == X1.nbytes + y1.nbytes
    np.testing.assert_array_equal(X1.compute(), X2.compute())
    np.testing.assert_array_equal(y1.compute(), y2.compute())
    client.cancel([X1, y1, X2, y2])


@pytest.mark.timeout(180)
def test_engine_quick_run_reports_every_goal_figure(tmp_path):
    output = tmp_path / "engine.json"
    assert cli_main(["bench", "engine", "--quick", "--output", str(output)]) == 0
    saved = json.loads(output.read_text())
    assert [goal["key"] for goal in saved["goals"]] == [g[1] for g in engine_efficiency.GOALS]
    for goal in saved["goals"]:
        value = goal["value"]
        assert math.isfinite(value) and value > 0, goal
        assert goal["met"] == (value >= goal["goal"] if goal["direction"] == "min" else
                               value <= goal["goal"])  # fmt: skip
    for k in (1, 2):  # k loops side by side, each on its share of the rows
        limit = saved["limits"][str(k)]
        assert limit["processes"] == k and len(limit["process_samples_per_second"]) == k
        assert limit["samples_per_second"] > 0
        for name in ("default", "sync"):
            fit = saved["workers"][str(k)]["fits"][name]
            assert fit["fraction_of_limit"] == pytest.approx(
                fit["samples_per_second"] / limit["samples_per_second"]
            )
            assert fit["setup_seconds"] > 0  # the fit's wall time beyond its epochs
    memory = saved["workers"]["2"]["user_defaults"]["memory"]
    assert memory["share_bytes"] > 0 and memory["baseline_bytes"] > 0
    assert saved["figures"]["peak_memory_ratio"] == pytest.approx(
        memory["peak_bytes"] / (memory["share_bytes"] + memory["baseline_bytes"])
    )


@pytest.mark.timeout(60)
def test_step_cost_runs_every_contender_at_a_small_size():
    from dask_sgd.benchmarks import step_cost

    rates = step_cost.main(["--n-samples", "8192", "--repeats", "1"])["best"]
    assert set(rates) == {
        "plain NumPy loop", "engine, compiled products", "engine, NumPy's products"
    }  # fmt: skip
    assert all(math.isfinite(rate) and rate > 0 for rate in rates.values())


@pytest.mark.timeout(90)
def test_mlp_step_cost_runs_every_contender_at_a_small_size():
    from dask_sgd.benchmarks import mlp_step_cost

    result = mlp_step_cost.main(["--n-samples", "2048", "--repeats", "1", "--on-worker"])
    assert set(result["best"]) == {
        "plain NumPy loop", "engine step loop", "plain NumPy loop on a Dask worker",
        "dask_sgd unit on a Dask worker",
    }  # fmt: skip
    assert all(math.isfinite(rate) and rate > 0 for rate in result["best"].values())
    assert "| dask_sgd unit on a Dask worker |" in mlp_step_cost.markdown_table(result)


@pytest.mark.timeout(120)
def test_layerwise_runs_every_contender_at_a_small_size(tmp_path):
    from dask_sgd.benchmarks import layerwise

    output = tmp_path / "layerwise.json"
    result = layerwise.main(["--n-samples", "4000", "--repeats", "1", "--json", str(output)])
    assert set(result["samples_per_second"]) == set(layerwise.CONTENDERS)
    assert all(rate > 0 for rates in result["samples_per_second"].values() for rate in rates)
    assert layerwise.markdown_table(json.loads(output.read_text())).count("\n") == 5


@pytest.mark.timeout(60)
def test_minibatch_gather_writes_what_its_table_shows(tmp_path):
    from dask_sgd.benchmarks import minibatch_gather

    output = tmp_path / "gather.json"
    argv = ["--n-samples", "8192", "--repeats", "1", "--run-lengths", "16", "64"]
    result = minibatch_gather.main([*argv, "--json", str(output)])
    assert json.loads(output.read_text()) == result
    rows = [line for line in minibatch_gather.markdown_table(result).splitlines()[2:]]
    # slices, rows, runs of 16 and of 64 as a unit takes them, then the two other gathers
    assert len(rows) == 6
    assert rows[0].startswith("| slices of pre-shuffled rows") and " 1.00 |" in rows[0]


@pytest.mark.timeout(120)
def test_round_length_fits_each_setting_with_and_without_overlap():
    from dask_sgd.benchmarks import round_length

    rows = round_length.main(
        ["--n-samples", "16000", "--local-steps", "8", "auto", "--repeats", "1"]
    )
    assert [(row["local_steps"], row["overlap"]) for row in rows] == [
        (8, False), (8, True), ("auto", False), ("auto", True)
    ]  # fmt: skip
    for row in rows:
        assert 0 < row["log_loss"] < math.log(2)  # better than a coin
        assert row["waited_seconds"] >= 0
        assert all(steps in (8, 16, 32, 64) for steps in row["rounds"])


@pytest.mark.timeout(180)
def test_gpu_check_runs_on_a_stand_in_device_and_finds_the_fits_equal(tmp_path):
    """The GPU check's smoke run, on array_api_strict's "device1" (no GPU here): every
    fit on device blocks agrees with its NumPy fit, and the results are written."""
    from dask_sgd.benchmarks import gpu_check

    output = tmp_path / "gpu-check.json"
    results = gpu_check.main(["--device", "strict", "--quick", "--json", str(output)])
    rows = results["rows"]
    assert {(row["workload"], row["workers"]) for row in rows} == {
        (workload, workers) for workload in ("W1", "W3") for workers in (1, 2)
    }
    assert all(row["agrees"] for row in rows)
    assert all(row["relative_difference"] <= 1e-12 for row in rows)  # the same arithmetic
    assert all(row["device_samples_per_second"] > 0 for row in rows)
    assert set(results["plain_loops"]) == {"W1", "W3"}
    assert json.loads(output.read_text())["rows"] == rows
    assert "| W3 | 2 |" in gpu_check.markdown_table(results)
