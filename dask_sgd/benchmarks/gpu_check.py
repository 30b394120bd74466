"""The GPU check: W1 and W3 trained on CuPy blocks, against the NumPy path and a plain loop.

Run it on a machine with an NVIDIA GPU: ``bash dask_sgd/benchmarks/gpu_check.sh`` (installs
the ``gpu`` extra where CuPy is missing, then runs this module). For W1 (logistic regression,
float64) and W3 (the 50-256-256-10 network, float32), on a ``LocalCluster`` of one worker and
of two (two workers share one GPU), it fits the model twice on the same partitions: as
NumPy arrays, and moved to the GPU (``X.map_blocks(cupy.asarray)``). Both
fits use the same seeds and strategy "sync", whose steps do not depend on timing, for
:data:`EPOCHS` epochs. It reports, for each:

- samples per second: the training rows over the second epoch's wall time (the first
  pays for setup and compilation);
- held-out accuracy, and how far the GPU fit's parameters are from the NumPy fit's
  (``‖θ_gpu − θ_numpy‖ / ‖θ_numpy‖``): the two sum in other orders, so they agree to the
  dtype's precision grown over the epochs' steps, not exactly (:data:`AGREEMENT`);
- the samples per second of a plain loop of the same model in one process, on the GPU and
  on NumPy (:func:`dask_sgd.benchmarks.plain_loop.train` for W1,
  :func:`dask_sgd.benchmarks.mlp_step_cost.plain_loop` for W3).

It exits with status 1 if a GPU fit disagrees with its NumPy fit.

``--device strict`` runs the same on ``array_api_strict`` arrays on its "device1", a GPU's
stand-in on a machine without one (``--quick``: the test suite's smoke run); strict arrays
have no methods, so the "plain loop on the device" is then NumPy's.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from functools import partial

import numpy as np
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning

import dask_sgd
from dask_sgd.benchmarks import report, tta, w3
from dask_sgd.benchmarks.mlp_step_cost import plain_loop as mlp_plain_loop
from dask_sgd.benchmarks.plain_loop import train as linear_plain_loop
from dask_sgd.models.mlp import MLPModel

EPOCHS = 2
BATCH_SIZE = 256  # the plain loops' (the fits take their defaults)
#: the most that ``‖θ_gpu − θ_numpy‖ / ‖θ_numpy‖`` may be, by dtype; and held-out accuracy
#: may differ by at most ``AGREEMENT["accuracy"]``. Chosen before any GPU run, from the
#: rounding of each dtype grown over two epochs' steps: a path that is wrong (a lost
#: gradient, a stale θ) is off by far more
AGREEMENT = {"float64": 1e-6, "float32": 1e-2, "accuracy": 0.01}
#: ``--quick``: the workloads' rows at a smoke test's size
QUICK = {
    "W1": dict(n_samples=4_400, n_test=400, n_features=20, n_informative=10),
    "W3": dict(n_samples=1_100, n_test=100, n_features=50),
}


def device_arrays(name: str):
    """``(to_device, xp of the plain loop)`` of ``--device name``."""
    if name == "cupy":
        import cupy

        return cupy.asarray, cupy
    import array_api_strict

    return partial(array_api_strict.asarray, device=array_api_strict.Device("device1")), np


def estimator(workload: str):
    if workload == "W1":
        return dask_sgd.SGDClassifier(loss="log_loss", strategy="sync", tol=None)
    return dask_sgd.MLPClassifier(w3.HIDDEN, strategy="sync", tol=0.0)


def parameters(model) -> np.ndarray:
    arrays = (
        [model.coef_, model.intercept_]
        if hasattr(model, "coef_")
        else model.coefs_ + model.intercepts_
    )
    return np.concatenate([np.ravel(a) for a in arrays])


def timed_fit(workload: str, X, y, n_rows: int):
    """A fit of :data:`EPOCHS` epochs and its second epoch's samples per second."""
    model = estimator(workload).set_params(max_iter=EPOCHS, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the epochs are the point
        model.fit(X, y)
    first, second = (record["wall_time"] for record in model.history_[:2])
    return model, n_rows / (second - first)


def check_cluster(workload: str, data: dict, to_device) -> dict:
    """The NumPy fit and the device fit on the same partitions, each made by its fit (as
    copies, or device arrays): a fit deals the partitions it makes to the workers in order,
    so both fits' units train on the same rows (persisted partitions would stay where
    they were put, which may differ between the two)."""
    n_rows = data["X"].shape[0]
    host, host_rate = timed_fit(workload, data["dX"].map_blocks(np.copy), data["dy"], n_rows)
    device_X = data["dX"].map_blocks(to_device)
    device, device_rate = timed_fit(workload, device_X, data["dy"], n_rows)
    theta, reference = parameters(device), parameters(host)
    accuracy = [m.score(data["X_test"], data["y_test"]) for m in (host, device)]
    return {
        "numpy_samples_per_second": host_rate,
        "device_samples_per_second": device_rate,
        "numpy_accuracy": accuracy[0],
        "device_accuracy": accuracy[1],
        "relative_difference": float(np.linalg.norm(theta - reference) / np.linalg.norm(reference)),
        "dtype": str(reference.dtype),
    }


def agrees(row: dict) -> bool:
    return (
        row["relative_difference"] <= AGREEMENT[row["dtype"]]
        and abs(row["device_accuracy"] - row["numpy_accuracy"]) <= AGREEMENT["accuracy"]
    )


def plain_loops(workload: str, data: dict, xp) -> dict:
    """Samples per second of the plain loop on NumPy and on the device, one process."""
    X, y = data["X"], data["y"]
    rates = {}
    for name, module in (("numpy", np), ("device", xp)):
        X_there, y_there = module.asarray(X), module.asarray(y)
        if workload == "W1":
            rates[name] = linear_plain_loop(X_there, y_there, BATCH_SIZE, 1, xp=module)
        else:
            theta = MLPModel(X.shape[1], w3.HIDDEN, 10).init_params(0, dtype=X.dtype)
            Y = module.asarray(np.eye(10, dtype=X.dtype)[y])
            rates[name] = mlp_plain_loop(X_there, Y, theta, BATCH_SIZE, xp=module)
    return rates


def make_data(client, workload: str, quick: bool) -> dict:
    """The workload's rows (``BENCHMARKS.md``), train also persisted on the cluster."""
    full = tta.WORKLOADS["dense-logreg"] if workload == "W1" else w3.SIZE
    make = tta.make_data if workload == "W1" else w3.make_data
    return make(client, **(QUICK[workload] if quick else full))


def run(device: str, quick: bool) -> dict:
    to_device, xp = device_arrays(device)
    results = {"device": device, "quick": quick, "epochs": EPOCHS, "rows": []}
    for n_workers in (1, 2):
        # processes, as a real cluster's workers are; threads for the smoke run's speed
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=not quick,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            for workload in ("W1", "W3"):
                data = make_data(client, workload, quick)
                row = {"workload": workload, "workers": n_workers}
                row |= check_cluster(workload, data, to_device)
                row["agrees"] = agrees(row)
                if n_workers == 1:
                    loops = plain_loops(workload, data, xp)
                    results.setdefault("plain_loops", {})[workload] = loops
                results["rows"].append(row)
                client.cancel([data["dX"], data["dy"]])
    return results


def markdown_table(results: dict) -> str:
    rows = [
        (
            r["workload"], r["workers"], f"{r['numpy_samples_per_second'] / 1e3:.1f}k",
            f"{r['device_samples_per_second'] / 1e3:.1f}k",
            f"{r['numpy_accuracy']:.4f}", f"{r['device_accuracy']:.4f}",
            f"{r['relative_difference']:.1e}", "yes" if r["agrees"] else "NO",
        )
        for r in results["rows"]
    ]  # fmt: skip
    fits = report.markdown_table(
        ("workload", "workers", "NumPy samples/s", "device samples/s", "NumPy accuracy",
         "device accuracy", "‖Δθ‖/‖θ‖", "agrees"),
        rows, labels=2,
    )  # fmt: skip
    loops = report.markdown_table(
        ("plain loop, one process", "NumPy samples/s", "device samples/s"),
        [
            (workload, f"{rates['numpy'] / 1e3:.1f}k", f"{rates['device'] / 1e3:.1f}k")
            for workload, rates in results["plain_loops"].items()
        ],
    )
    return f"{fits}\n\n{loops}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cupy", "strict"], default="cupy")
    parser.add_argument("--quick", action="store_true", help="small rows, a threads cluster")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run(args.device, args.quick)
    results["seconds"] = time.perf_counter() - started
    report.save_and_print(results, args.json, markdown_table)
    return results


if __name__ == "__main__":
    sys.exit(0 if all(row["agrees"] for row in main()["rows"]) else 1)
