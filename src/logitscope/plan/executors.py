"""Executors for the reproduce plan: in this process, or as Ray tasks on a cluster.

Both run a wave of ready stages (every dependency done) and record each stage when it comes
back: a done marker, or, when it raised, a failure record with its error and the tail of its
log (``record_outcome``); one stage's failure never stops the others. ``run`` returns the
stages that came back (name -> error line, None when done); the plan is rebuilt between
waves. Stages communicate only through files under the output folder, so a Ray worker needs
that folder on a shared file system.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from logitscope.plan.dag import Plan, Stage, record_outcome, run_stage, timed_run_stage

log = logging.getLogger(__name__)


class LocalExecutor:
    """Stages on this machine: one after another in this process (``jobs=1``), or as a pool of
    ``jobs`` worker processes that each take the next ready stage as soon as they are free
    (each with ``cores // jobs`` torch threads; CPU results depend on the thread count)."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs {jobs}: expected at least 1 worker")
        self.jobs = jobs
        self._pool: Any = None
        self._inflight: dict[str, tuple[Any, Stage, float]] = {}

    @property
    def busy(self) -> bool:
        return bool(self._inflight)

    def run(self, plan: Plan, ready: list[Stage]) -> dict[str, str | None]:
        if self.jobs == 1:
            finished: dict[str, str | None] = {}
            for i, stage in enumerate(ready, 1):
                log.info("[%d/%d] %s", i, len(ready), stage.name)
                t0 = time.perf_counter()
                outcome: dict[str, Any] | Exception
                try:
                    outcome = run_stage(str(plan.out), stage.fn, stage.params, name=stage.name)
                except Exception as exc:  # recorded; the other stages still run
                    outcome = exc
                finished[stage.name] = record_outcome(plan, stage, outcome, time.perf_counter() - t0)
            return finished
        return self._run_pool(plan, ready)

    def _run_pool(self, plan: Plan, ready: list[Stage]) -> dict[str, str | None]:
        import concurrent.futures as cf
        import multiprocessing as mp
        import os
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.jobs, mp_context=mp.get_context("spawn"))
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        # one stage per free worker, the most urgent first; the rest wait for the next call (a
        # stage queued inside the pool could not be overtaken by a more urgent one)
        for stage in plan.by_urgency([s for s in ready if s.name not in self._inflight]):
            if len(self._inflight) < self.jobs:
                log.info("start %s", stage.name)
                out = str(plan.out.resolve())
                fut = self._pool.submit(timed_run_stage, out, stage.fn, stage.params, threads, stage.name)
                self._inflight[stage.name] = (fut, stage, time.perf_counter())
        done, _ = cf.wait([f for f, _, _ in self._inflight.values()], return_when=cf.FIRST_COMPLETED)
        finished: dict[str, str | None] = {}
        broken = False
        for name in [name for name, (f, _, _) in self._inflight.items() if f in done]:
            fut, stage, t0 = self._inflight.pop(name)
            try:
                outcome, seconds = fut.result()  # the stage's own time, not its time in the queue
            except Exception as exc:  # the worker died: recorded; the other stages still run
                outcome, seconds = exc, time.perf_counter() - t0
                broken = broken or isinstance(exc, BrokenProcessPool)
            finished[name] = record_outcome(plan, stage, outcome, seconds)
        if broken:  # a worker died (killed, out of memory): every stage in flight went with it
            for name, (_, stage, t0) in list(self._inflight.items()):
                exc = RuntimeError("a worker process died while the stage ran (killed or out of memory?)")
                finished[name] = record_outcome(plan, stage, exc, time.perf_counter() - t0)
            self.shutdown()
        return finished

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._inflight.clear()


class RayExecutor:
    """Independent stages as Ray tasks, each asking for one CPU (and running one torch
    thread, so CPU results equal a one-thread local run's) and, for GPU stages on a cluster
    with GPUs, one GPU. ``address=None`` starts a local Ray instance."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ValueError("--executor ray needs Ray: pip install 'logitscope[cluster]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus}
            ray.init(log_to_driver=False, include_dashboard=False, **kwargs)
        self.has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        self._task = ray.remote(timed_run_stage)

    def run(self, plan: Plan, ready: list[Stage]) -> dict[str, str | None]:
        out = str(plan.out.resolve())  # workers do not share the driver's working directory
        pending = {}
        for stage in ready:
            gpus = 1 if (stage.gpu and self.has_gpu) else 0
            task = self._task.options(num_cpus=1, num_gpus=gpus, name=stage.name)
            ref = task.remote(out, stage.fn, stage.params, threads=1, name=stage.name)
            pending[ref] = (stage, time.perf_counter())
        finished: dict[str, str | None] = {}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            stage, t0 = pending.pop(done[0])
            try:
                outcome, seconds = self.ray.get(done[0])  # the stage's own time, not its time in the queue
            except Exception as exc:  # the task died: recorded; the other stages of the wave still finish
                outcome, seconds = exc, time.perf_counter() - t0
            finished[stage.name] = record_outcome(plan, stage, outcome, seconds)
        return finished

    def shutdown(self) -> None:
        self.ray.shutdown()


def default_jobs() -> int:
    """Local worker processes by default: one per CPU core without CUDA, else one."""
    import os

    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def make_executor(name: str, address: str | None = None, jobs: int = 1) -> LocalExecutor | RayExecutor:
    if name == "local":
        if address:
            raise ValueError("--address is for --executor ray")
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {name!r}: expected local or ray")
