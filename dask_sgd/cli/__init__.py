"""The ``dask-sgd`` command.

    dask-sgd train DATA --target NAME [options] ...        fit on a file, report, save
    dask-sgd demo [--n-samples N] [--strategy S] ...       the README's main job
    dask-sgd bench [tta|engine|scaling|defaults|sparse-defaults|soak] [options]  the benchmarks (docs/benchmarks.md)

Each subcommand passes the rest of its arguments to the module that does the work, so
``dask-sgd bench tta --help`` shows the benchmark's own options.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: ``dask-sgd bench NAME`` runs ``dask_sgd.benchmarks.<module>.main``
BENCHMARKS = {
    "tta": "tta",
    "defaults": "defaults",
    "sparse-defaults": "sparse_defaults",
    "engine": "engine_efficiency",
    "scaling": "scaling",
    "soak": "soak",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="dask-sgd",
        description="Distributed SGD on Dask with scikit-learn's API.",
        epilog="train: fit on Parquet, CSV, Zarr or .npy data; demo: the README's main job "
        "on an embedded LocalCluster; bench [tta|engine|scaling|defaults|sparse-defaults|soak]: run a benchmark "
        "(tta by default). Options after the command go to it (--help too).",
    )
    parser.add_argument("command", choices=["train", "demo", "bench"])
    args = parser.parse_args(argv[:1])
    rest = argv[1:]
    if args.command == "train":
        from dask_sgd.cli import train

        train.main(rest)
        return 0
    if args.command == "demo":
        from dask_sgd import demo

        demo.main(rest)
        return 0
    name = rest.pop(0) if rest and rest[0] in BENCHMARKS else "tta"
    try:
        module = importlib.import_module(f"dask_sgd.benchmarks.{BENCHMARKS[name]}")
        module.main(rest)
    except ModuleNotFoundError as error:
        if error.name not in ("dask_ml", "matplotlib"):
            raise
        print(
            f"dask-sgd bench needs {error.name}: pip install 'dask-sgd[benchmarks]'",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
