"""Where cells run: ``local`` (in-process or N spawned worker processes) or ``ray``.

Backends only schedule: each calls :func:`experiments.cells.run_cell`, which
writes its own record, and reports events (start / epoch / done / failed) to one
callback in the driver so the CLI can draw progress. A failed cell is reported
and left out of the store, so the next run retries it.

Every backend subclasses :class:`Backend` and is registered by name with
:func:`register_backend`; ``--backend NAME`` and :func:`make_backend` look it up there, and
the contract test runs every registered one. Adding a backend is one class here.
"""

from __future__ import annotations

import os
import queue as queue_mod
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace

from experiments.arithmetic import CELL_THREADS
from experiments.cells import Cell, RunContext, run_cell
from imagesets import UserError

__all__ = ["BACKENDS", "Backend", "BackendError", "LocalBackend", "RayBackend", "make_backend",
           "register_backend"]

Event = Callable[[dict], None]


class BackendError(UserError):
    """A backend that cannot start (ray missing, bad address, bad worker count)."""


class Backend:
    """Runs cells: ``run`` calls :func:`run_cell` for each, emits one ``done`` (with the
    record) or ``failed`` event per cell, and returns the records of the cells that finished.
    A failing cell never stops the others."""

    name = ""

    @classmethod
    def from_options(cls, workers: int = 1, address: str | None = None,
                     threads: int | None = None) -> Backend:
        """Build from the CLI's ``--workers/--address/--threads`` (reject what does not apply)."""
        raise NotImplementedError

    def run(self, cells: Sequence[Cell], ctx: RunContext, on_event: Event) -> list[dict]:
        raise NotImplementedError


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: make ``--backend NAME`` run this :class:`Backend`."""

    def deco(cls: type[Backend]) -> type[Backend]:
        if name in BACKENDS:
            raise ValueError(f"backend {name!r} is already registered")
        cls.name = name
        BACKENDS[name] = cls
        return cls

    return deco


def _failure(cell: Cell, exc: BaseException) -> dict:
    msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return {"event": "failed", "key": cell.key, "label": cell.label, "error": msg,
            "traceback": traceback.format_exc(limit=5)}


@register_backend("local")
class LocalBackend(Backend):
    """Sequential in this process (workers=1) or a spawn ``ProcessPoolExecutor``.

    Every cell runs on :data:`experiments.arithmetic.CELL_THREADS` torch threads whatever the
    schedule (its result must not depend on it); ``threads`` is the CPU budget, so at most
    ``threads // CELL_THREADS`` workers run at once.
    """

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if workers < 1:
            raise BackendError("--workers must be >= 1")
        self.workers = workers
        self.threads = threads or (os.cpu_count() or 1)

    @classmethod
    def from_options(cls, workers: int = 1, address: str | None = None,
                     threads: int | None = None) -> LocalBackend:
        if address:
            raise BackendError("--address is for --backend ray")
        return cls(workers=workers, threads=threads)

    @property
    def processes(self) -> int:
        """Cells running at once: ``workers``, capped by the thread budget."""
        return max(1, min(self.workers, self.threads // CELL_THREADS))

    def run(self, cells: Sequence[Cell], ctx: RunContext, on_event: Event) -> list[dict]:
        ctx = replace(ctx, threads=CELL_THREADS)
        if self.processes == 1 or len(cells) <= 1:
            return self._sequential(cells, ctx, on_event)
        return self._pool(cells, ctx, on_event)

    def _sequential(self, cells: Sequence[Cell], ctx: RunContext, on_event: Event) -> list[dict]:
        out = []
        for cell in cells:
            try:
                rec = run_cell(cell, ctx, on_event)
            except Exception as exc:  # one bad cell must not stop the grid
                on_event(_failure(cell, exc))
                continue
            on_event({"event": "done", "key": cell.key, "label": cell.label, "record": rec})
            out.append(rec)
        return out

    def _pool(self, cells: Sequence[Cell], ctx: RunContext, on_event: Event) -> list[dict]:
        import multiprocessing as mp

        mpctx = mp.get_context("spawn")
        out: list[dict] = []
        with mpctx.Manager() as manager:
            events = manager.Queue()
            with ProcessPoolExecutor(max_workers=self.processes, mp_context=mpctx) as pool:
                futs = {pool.submit(_pool_job, c, ctx, events): c for c in cells}
                pending = set(futs)
                while pending:
                    done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                    _drain(events, on_event)
                    for f in done:
                        cell = futs[f]
                        try:
                            rec = f.result()
                        except Exception as exc:
                            on_event(_failure(cell, exc))
                            continue
                        on_event({"event": "done", "key": cell.key, "label": cell.label, "record": rec})
                        out.append(rec)
                _drain(events, on_event)
        return out


def _drain(events: queue_mod.Queue, on_event: Event) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except (queue_mod.Empty, EOFError, OSError):
            return


def _pool_job(cell: Cell, ctx: RunContext, events: queue_mod.Queue) -> dict:
    return run_cell(cell, ctx, events.put)


def _ray_job(cell: Cell, ctx: RunContext) -> dict:
    return run_cell(cell, ctx)


@register_backend("ray")
class RayBackend(Backend):
    """One Ray task per cell; ``num_gpus=1`` per task when CUDA is visible; retries on worker loss.

    ``address``: ``auto`` joins a running cluster, ``HOST:PORT`` a given one, ``None``
    starts (or reuses) a local instance. The store and data paths must be visible
    to every node (a shared filesystem, or ``sqlite:///`` on one host).
    """

    @classmethod
    def from_options(cls, workers: int = 1, address: str | None = None,
                     threads: int | None = None) -> RayBackend:
        return cls(address=address)

    def __init__(self, address: str | None = None, max_retries: int = 3, num_cpus_per_task: float = 1) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise BackendError("--backend ray needs the ray extra: pip install 'catscans[ray]'") from exc
        self.address = address
        self.max_retries = max_retries
        self.num_cpus = num_cpus_per_task

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        try:
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=min(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            raise BackendError(f"cannot connect to ray at {self.address or 'a local instance'}: "
                               f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc

    def run(self, cells: Sequence[Cell], ctx: RunContext, on_event: Event) -> list[dict]:
        import ray
        import torch

        self._init()
        ctx = replace(ctx, threads=CELL_THREADS)
        task = ray.remote(_ray_job).options(
            num_cpus=self.num_cpus, num_gpus=1 if torch.cuda.is_available() else 0,
            max_retries=self.max_retries, retry_exceptions=False,
        )
        refs = {}
        for cell in cells:
            refs[task.remote(cell, ctx)] = cell
            on_event({"event": "start", "key": cell.key, "label": cell.label})
        out: list[dict] = []
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                cell = refs[ref]
                try:
                    rec = ray.get(ref)
                except Exception as exc:
                    on_event(_failure(cell, exc))
                    continue
                on_event({"event": "done", "key": cell.key, "label": cell.label, "record": rec})
                out.append(rec)
        return out


def make_backend(name: str, workers: int = 1, address: str | None = None,
                 threads: int | None = None) -> Backend:
    """The registered backend ``name``, built from the CLI options."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}' ({' or '.join(BACKENDS)})")
    return BACKENDS[name].from_options(workers=workers, address=address, threads=threads)
