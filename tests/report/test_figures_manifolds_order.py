"""The report draws figures 5 and A.8 from ``manifolds.json``, whose keys are sorted: the
models and layers must come back in the order the stage measured them (the lines' colours
and the x axis, input to logits)."""

from __future__ import annotations

import json

from logitscope.fileio.atomic import atomic_write_json
from logitscope.report.figures_manifolds import in_stored_order


def _layer(c: float) -> dict:
    return {"capacity": c, "radius": 1.0, "dimension": 2.0, "center_corr": 0.1, "defined": True}


def test_models_and_layers_come_back_in_measured_order(tmp_path):
    layers = ["input", "conv1", "fc1", "logits"]
    models = {
        label: {"run": label, "epoch": 1, "layers": {n: _layer(i) for i, n in enumerate(layers)}, "layer_order": layers}
        for label in ("ST teacher", "AT teacher", "normal student")
    }
    atomic_write_json(tmp_path / "m.json", {"models": models, "model_order": list(models)})
    stored = json.loads((tmp_path / "m.json").read_text())
    assert list(stored["models"]) == ["AT teacher", "ST teacher", "normal student"]  # sorted on disk
    assert list(stored["models"]["ST teacher"]["layers"]) == ["conv1", "fc1", "input", "logits"]
    back = in_stored_order(stored)
    assert list(back) == ["ST teacher", "AT teacher", "normal student"]
    assert all(list(r["layers"]) == layers for r in back.values())
    assert back["AT teacher"]["layers"]["fc1"]["capacity"] == 2  # the values travel with their names
    del stored["model_order"]  # a file of an earlier version: the file's order
    assert list(in_stored_order(stored)) == ["AT teacher", "ST teacher", "normal student"]
