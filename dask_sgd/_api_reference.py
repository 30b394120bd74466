"""The API reference, ``docs/api.md``, rendered from the docstrings.

    python -m dask_sgd._api_reference > docs/api.md

The test suite checks that ``docs/api.md`` is what this renders, so the reference cannot
drift from the code.
"""

from __future__ import annotations

import inspect

import dask_sgd
from dask_sgd import datasets, defaults, optim, schedules

#: (section title, objects by their public names), in the order a reader meets them
SECTIONS = [
    (
        "Estimators",
        {"dask_sgd.SGDClassifier": dask_sgd.SGDClassifier,
         "dask_sgd.SGDRegressor": dask_sgd.SGDRegressor,
         "dask_sgd.MLPClassifier": dask_sgd.MLPClassifier,
         "dask_sgd.MLPRegressor": dask_sgd.MLPRegressor},
    ),
    ("Saving and loading", {"dask_sgd.save": dask_sgd.save, "dask_sgd.load": dask_sgd.load}),
    ("Watching a fit", {"dask_sgd.plot_history": dask_sgd.plot_history}),
    ("Errors", {"dask_sgd.TrainingFailed": dask_sgd.TrainingFailed}),
    (
        "What \"auto\" means",
        {"dask_sgd.defaults.batch_size": defaults.batch_size,
         "dask_sgd.defaults.schedule": defaults.schedule,
         "dask_sgd.defaults.n_shards": defaults.n_shards},
    ),
    (
        "Optimizers",
        {f"dask_sgd.optim.{name}": getattr(optim, name)
         for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "chain",
                      "get_optimizer")},
    ),
    (
        "Schedules",
        {f"dask_sgd.schedules.{name}": getattr(schedules, name)
         for name in ("constant", "optimal", "invscaling", "adaptive", "warmup",
                      "linear_scaling_factor", "batch_scaling_factor")},
    ),
    (
        "Data",
        {f"dask_sgd.datasets.{name}": getattr(datasets, name)
         for name in ("make_linear_classification", "make_classification_blocks")},
    ),
]  # fmt: skip
#: the estimators' methods worth a line each
METHODS = ["fit", "partial_fit", "predict", "predict_proba", "decision_function", "score"]


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _entry(name: str, obj) -> list[str]:
    is_class = inspect.isclass(obj)
    signature = "" if is_class else _signature(obj)  # a class: its parameters are listed below
    doc = inspect.getdoc(obj) or "(no docstring)"
    lines = [f"### `{name}{signature}`", "", "```text", doc, "```", ""]
    if is_class and not issubclass(obj, Exception):
        for method in METHODS:
            function = getattr(obj, method, None)
            if function is not None:
                summary = (inspect.getdoc(function) or "").split("\n\n")[0].replace("\n", " ")
                lines.append(f"- `{method}{_signature(function)}`: {summary}")
        lines.append("")
    return lines


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Rendered from the docstrings by `python -m dask_sgd._api_reference > docs/api.md`.",
        "",
    ]
    for title, objects in SECTIONS:
        lines += [f"## {title}", ""]
        for name, obj in objects.items():
            lines += _entry(name, obj)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
