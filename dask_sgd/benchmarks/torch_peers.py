"""W3's PyTorch peers: the same network trained by PyTorch on the CPU, in one process and
with DistributedDataParallel over processes (gloo).

Each is an estimator-like object (``fit``, ``predict``, ``predict_proba``) so that the
time-to-accuracy harness fits and scores it as any other contender. PyTorch is imported
only when one fits: it is in the ``benchmarks`` extra, not in what dask_sgd needs.

The DDP processes start, import PyTorch, join their process group and load their rows
(memory-mapped ``.npy`` files) before the clock starts, as a Dask cluster is up with its rows
persisted before dask_sgd's clock starts; ``fit_seconds_`` is the training alone, from a
barrier after all of that to the last step's end on every process.
"""

from __future__ import annotations

import itertools
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np


def _network(n_features: int, hidden: tuple[int, ...], n_classes: int, seed: int):
    """Linear layers with ReLU between them (PyTorch's default initialisation)."""
    import torch

    torch.manual_seed(seed)
    sizes = [n_features, *hidden, n_classes]
    layers: list = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def _train(net, X, y, epochs: int, batch_size: int, lr: float, seed: int, rank=0, world=1):
    """Adam on cross-entropy, ``epochs`` passes over the rows ``rank::world`` of each
    epoch's shuffle (DistributedSampler's rule)."""
    import torch

    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    X, y = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.asarray(y, np.int64))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)[rank::world]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(net(X[rows]), y[rows]).backward()
            optimizer.step()


class _TorchClassifier:
    """What the harness needs of a fitted network: class probabilities and labels."""

    net = None

    def predict_proba(self, X):
        import torch

        with torch.no_grad():
            logits = self.net(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
            return torch.softmax(logits, dim=1).numpy()

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class TorchMLP(_TorchClassifier):
    """The network trained by PyTorch in this process, on ``threads`` threads."""

    def __init__(self, hidden, epochs, batch_size=256, lr=1e-3, threads=2, seed=0):
        self.hidden, self.epochs, self.batch_size = tuple(hidden), epochs, batch_size
        self.lr, self.threads, self.seed = lr, threads, seed

    def fit(self, X, y):
        import torch

        self.classes_, codes = np.unique(y, return_inverse=True)
        torch.set_num_threads(self.threads)
        self.net = _network(X.shape[1], self.hidden, len(self.classes_), self.seed)
        _train(self.net, X, codes, self.epochs, self.batch_size, self.lr, self.seed)
        return self


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_process(rank: int, world: int, port: int, folder: str, config: dict) -> None:
    """One DDP process: join the group, load the rows, then (timed between barriers)
    train; rank 0 saves the weights and the seconds."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(config["threads"])
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        X = np.load(Path(folder) / "X.npy", mmap_mode="r")
        y = np.load(Path(folder) / "y.npy")
        # the same start on every process (DDP also broadcasts rank 0's at its construction)
        net = _network(X.shape[1], config["hidden"], config["n_classes"], config["seed"])
        model = torch.nn.parallel.DistributedDataParallel(net)
        X = np.array(X)  # in memory before the clock
        dist.barrier()
        started = time.perf_counter()
        _train(model, X, y, config["epochs"], config["batch_size"], config["lr"],
               config["seed"], rank, world)  # fmt: skip
        dist.barrier()
        seconds = time.perf_counter() - started
        if rank == 0:
            torch.save({"state": net.state_dict(), "seconds": seconds}, Path(folder) / "out.pt")
    finally:
        dist.destroy_process_group()


class TorchDDP(_TorchClassifier):
    """The network trained by PyTorch DistributedDataParallel: ``processes`` processes of
    ``threads`` threads, gloo, ``batch_size`` rows per process and step."""

    def __init__(self, hidden, epochs, batch_size=128, lr=1e-3, processes=2, threads=1, seed=0):
        self.hidden, self.epochs, self.batch_size = tuple(hidden), epochs, batch_size
        self.lr, self.processes, self.threads, self.seed = lr, processes, threads, seed

    def fit(self, X, y):
        import torch
        import torch.multiprocessing as mp

        self.classes_, codes = np.unique(y, return_inverse=True)
        config = dict(
            hidden=self.hidden, n_classes=len(self.classes_), epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, threads=self.threads, seed=self.seed,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="dask-sgd-ddp-") as folder:
            np.save(Path(folder) / "X.npy", np.ascontiguousarray(X, dtype=np.float32))
            np.save(Path(folder) / "y.npy", codes.astype(np.int64))
            mp.spawn(
                _ddp_process, args=(self.processes, _free_port(), folder, config),
                nprocs=self.processes, join=True,
            )  # fmt: skip
            out = torch.load(Path(folder) / "out.pt")
        self.net = _network(X.shape[1], self.hidden, len(self.classes_), self.seed)
        self.net.load_state_dict(out["state"])
        self.fit_seconds_ = out["seconds"]
        return self
