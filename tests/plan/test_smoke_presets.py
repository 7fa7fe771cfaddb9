"""The CIFAR path end to end on CPU: each smoke preset (the paper preset's graph, shrunk in
sizes) on synthetic tarballs in the official format, every stage and every report section.

Slow (minutes each, most of it torch.compile on a cold cache): `.ci/run` runs them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from logitscope.plan.reproduce import reproduce


@pytest.mark.slow
@pytest.mark.parametrize("dataset, classes", [("cifar10", 10), ("cifar100", 100)])
def test_smoke_preset_runs_every_stage_and_fills_every_report_section(
    tmp_path, accept_synthetic_cifar, dataset, classes
):
    out = tmp_path / "out"
    # one job: the md5 fixture patches this process only
    assert reproduce(f"{dataset}-smoke", out, data_dir=str(accept_synthetic_cifar), jobs=1) == 0
    assert not any((out / "plan" / "failed").glob("*"))

    report = json.loads((out / "report" / "report.json").read_text())
    sections = {s["id"]: s for s in report["sections"]}
    for sid in ("logits", "ranks", "distillation", "manifolds", "theory"):
        assert sections[sid]["figures"], sid
        for fig in sections[sid]["figures"]:
            assert fig["missing_reason"] is None, (sid, fig["id"], fig["missing_reason"])
    assert len(sections["claims"]["claims"]) > 20
    assert (out / "report" / "tables" / "crosscheck.csv").is_file()

    # figures 5 and A.8 from ResNet-18's layer taps, simulated capacity included
    manifolds = json.loads((out / "manifolds" / "manifolds.json").read_text())
    for model in manifolds["models"].values():
        assert model["layer_order"] == ["input", "stem", "layer1", "layer2", "layer3", "layer4", "pool", "logits"]
        assert model["layers"]["layer1"]["features"] == 5000  # 8 x 32 x 32 taps projected to max_features
        assert any(layer.get("simulated_capacity") is not None for layer in model["layers"].values())

    # every transform over all the dataset's classes: the students' targets and every run's logits
    runs = list((out / "runs").iterdir())
    students = [r for r in runs if (r / "targets" / "targets.npy").is_file()]
    assert len(students) == 8 + 1 + 18 + 2  # sweep (4 epochs x L1/KL), normal, fix-1..9 x 2, correct-fix-1, hybrid
    for run in students:
        assert np.load(run / "targets" / "targets.npy").shape[1] == classes, run.name
    for run in runs:
        assert np.load(sorted((run / "logits" / "test").glob("epoch_*.npy"))[-1]).shape[1] == classes, run.name
