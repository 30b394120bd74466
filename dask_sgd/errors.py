"""The errors of dask_sgd, in one module that every layer may import."""

from __future__ import annotations


class NonFiniteParameters(FloatingPointError):
    """A step met a NaN or an infinity, in a gradient or in the parameters it would make.

    Nothing non-finite is ever applied: the step stops before. ``partition`` is the Dask
    partition of the minibatch, where known. The epoch loop words the error for the user.
    """

    def __init__(self, step: int, what: str = "parameters", partition: int | None = None):
        where = "" if partition is None else f" in partition {partition}"
        super().__init__(f"non-finite {what} at step {step}{where}")
        self.step, self.what, self.partition = step, what, partition

    def __reduce__(self):  # raised in a task or an actor, re-raised on the client
        return type(self), (self.step, self.what, self.partition)


class TrainingFailed(RuntimeError):
    """Training on the cluster cannot go on: lost workers, scheduler or recoveries."""


class ShardLost(RuntimeError):
    """A parameter-server shard died with its worker."""


class TrainingAborted(RuntimeError):
    """A shard was aborted while a unit waited on it: a consequence, never the cause.

    The trainer aborts the shards when one unit fails or a shard is lost, so that no other
    unit waits for ever; the units that were waiting fail with this. The trainer reports
    the first error that is not one of these.
    """
