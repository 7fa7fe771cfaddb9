"""``logitscope analyze RUN [RUN ...]``: the logit analyses over ST and AT runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from logitscope.analysis.summary import analyze_runs
from logitscope.store.runs import Run


def analyze(runs: list[str | os.PathLike], epoch: int | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Group ``runs`` into ST and AT by their configs and run every analysis on them."""
    from logitscope.data import load_data

    loaded = [Run(r) for r in runs]
    imported = [r.dir.name for r in loaded if r.imported]
    if imported:
        raise ValueError(
            f"run {imported[0]} is imported: say which runs are standard and which robust with "
            "logitscope compare --st RUN... --at RUN..."
        )
    st = [r.dir for r in loaded if r.config.objective == "standard"]
    at = [r.dir for r in loaded if r.config.objective != "standard"]
    if not st or not at:
        raise ValueError(f"{len(st)} ST and {len(at)} AT/student runs given: expected at least one of each")
    names = {r.config.data.name for r in loaded}
    if len(names) > 1:
        raise ValueError(f"runs of several datasets {sorted(names)}: expected runs of one dataset")
    data = load_data(loaded[0].config.data)
    out = out_dir or loaded[0].dir.parent / "analysis"
    return analyze_runs(
        st, at, epoch, out, images=data.x_test.numpy(), class_names=data.class_names, dataset=loaded[0].config.data.name
    )
