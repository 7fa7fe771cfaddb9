"""The folders and files of an output folder (``logitscope reproduce`` or ``compare``): every
path of one is built here, so the stages that write it and the report that reads it agree.

    <out>/runs/<run-id>/            the run store (`logitscope.store.runs`)
    <out>/plan/teacher.json         the teacher choice (appendix A.3)
    <out>/analysis/analysis.json    the analyze stage (`logitscope.analysis.analyze`)
    <out>/manifolds/manifolds.json  the manifolds stage (`logitscope.manifolds.geometry`)
    <out>/manifolds/summary.txt
    <out>/theory/theory.json        the theory stage (`logitscope.theory.model`)
    <out>/report/index.html         the report; its figures in report/figures/
"""

from __future__ import annotations

import os
from pathlib import Path

ANALYSIS_JSON = "analysis.json"
MANIFOLDS_JSON = "manifolds.json"
MANIFOLDS_TEXT = "summary.txt"
THEORY_JSON = "theory.json"


def runs_dir(out: str | os.PathLike) -> Path:
    return Path(out) / "runs"


def teacher_choice(out: str | os.PathLike) -> Path:
    return Path(out) / "plan" / "teacher.json"


def analysis_dir(out: str | os.PathLike) -> Path:
    return Path(out) / "analysis"


def manifolds_dir(out: str | os.PathLike) -> Path:
    return Path(out) / "manifolds"


def theory_dir(out: str | os.PathLike) -> Path:
    return Path(out) / "theory"


def report_dir(out: str | os.PathLike) -> Path:
    return Path(out) / "report"


def figures_dir(out: str | os.PathLike) -> Path:
    return report_dir(out) / "figures"
