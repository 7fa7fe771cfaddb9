"""Helpers of the reproduce-plan tests: a tiny preset, an executor that records what it
runs, and every number an output folder holds."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitscope.fileio.atomic import load_npz
from logitscope.plan.dag import Plan, Stage, execute
from logitscope.plan.executors import LocalExecutor
from logitscope.plan.graph import build_plan, resolve_preset, validate_plan_inputs
from logitscope.store.logits import LogitStore

# Seconds on one core: AT 2 epochs of 2 attack steps, four 1-epoch sweep students, APGD of 5
# iterations on 40 test (and 40 validation: 4 per class held out for the teacher rule) images.
TINY: dict[str, Any] = {
    "name": "tiny",
    "seeds": [0],
    "train": {
        "preset": "digits",
        "epochs": 2,
        "checkpoint_epochs": [1],
        "set": {"monitor.pgd_n": 20, "monitor.pgd_steps": 2, "attack.steps": 2, "data.val_per_class": 4},
    },
    "evaluate": {"eps": 0.2, "n_iter": 5, "n_restarts": 1, "n": 40, "batch_size": 500},
    "teacher": {"fixed_epoch": None, "epochs": [1, 2], "rule": "robustness"},
    "distill": {
        "epochs": 1,
        "seeds": [0],
        "ks": [1],
        "loss": "l1",
        "temperature": 4.0,
        "passes": 1,
        "sweep_seeds": [0],
        "batched": "auto",
        "set": {},
    },
    "analysis": {"epoch": None},
    "manifolds": {"p": 4, "m": 4, "eps": None, "n_t": 20, "max_features": 200},
    "theory": {"classes": 10},
}
# Figure A.6's sweep (A.7 adds KL students, which the teacher rule does not read): its test
# evaluations SWEEP_EVALS are the figure's; the rule reads the validation ones, SWEEP_VAL_EVALS.
# The stages `only=["choose"]` runs, in the order the local executor runs them, are CHOOSE.
SWEEP = [f"distill-sweep-e{e}-l1-s0" for e in (1, 2)]
SWEEP_EVALS = [f"eval-{s}-e1" for s in SWEEP]
SWEEP_VAL_EVALS = [f"eval-val-{s}-e1" for s in SWEEP]
CHOOSE = ["train-at-s0", *SWEEP, *SWEEP_VAL_EVALS, "choose-teacher"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: on 2 shared cores, thread pools make tiny models 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class RecordingExecutor(LocalExecutor):
    """The local executor, remembering the names of the stages it ran, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def run(self, plan: Plan, ready: list[Stage]) -> dict[str, str | None]:
        self.names += [s.name for s in ready]
        return super().run(plan, ready)


def run_plan(preset: Path, out: Path, overrides: tuple[str, ...] = (), only: list[str] | None = None) -> list[str]:
    """Validate and run the plan of ``preset`` in ``out``; the names of the stages run (none may fail)."""
    resolved = resolve_preset(str(preset), list(overrides), None)
    validate_plan_inputs(resolved, None, out, only)
    rec = RecordingExecutor()
    ran, failed = execute(lambda: build_plan(resolved, out), only, rec)
    assert ran == len(rec.names) and not failed, failed
    return rec.names


def plan_results(out: Path) -> dict[str, Any]:
    """Every number a plan produced: stored logits, evaluation records and summaries, the
    teacher choice; keyed by run folder and file."""
    res: dict[str, Any] = {}
    for run in sorted((out / "runs").iterdir()):
        store = LogitStore(run)
        for split in store.splits:
            for epoch in store.epochs(split):
                res[f"{run.name}/logits/{split}/{epoch}"] = np.array(store.get(split, epoch))
        for f in sorted((run / "eval").glob("*.npz")):
            res.update({f"{run.name}/{f.name}/{k}": v for k, v in load_npz(f).items()})
        for f in sorted((run / "eval").glob("*.json")):
            s = json.loads(f.read_text())
            res[f"{run.name}/{f.name}"] = (s["clean_acc"], s["robust_acc"], s["settings"])
    res["teacher"] = json.loads((out / "plan" / "teacher.json").read_text())["epoch"]
    return res


def assert_same_results(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Same files, and every array bitwise equal."""
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k
