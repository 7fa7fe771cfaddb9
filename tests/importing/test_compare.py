"""`logitscope compare` on an imported ST / AT pair, end to end into a report."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from logitscope.cli import main
from logitscope.data import get_dataset

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.hidden(self.features((x - 0.3) / 0.4)))


def build():
    return Net()
"""


def _fit(model: torch.nn.Module, eps: float) -> torch.nn.Module:
    """Adam on digits' training split; ``eps > 0``: on FGSM examples from a random start
    (a small adversarial training, enough to keep some robustness at eps 0.2)."""
    x, y = get_dataset("digits").split("train")
    x = x.float().div(255)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        for idx in torch.randperm(len(y), generator=g).split(64):
            xb, yb = x[idx], y[idx]
            if eps > 0:
                delta = (torch.rand(xb.shape, generator=g) * 2 - 1) * eps
                xa = (xb + delta).clamp(0, 1).requires_grad_(True)
                grad = torch.autograd.grad(F.cross_entropy(model(xa), yb), xa)[0]
                xb = (xb + (xa.detach() + 1.25 * eps * grad.sign() - xb).clamp(-eps, eps)).clamp(0, 1)
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """An ST model (factory + weights) and an AT model (TorchScript), imported."""
    from logitscope.importing import import_file

    root = tmp_path_factory.mktemp("pair")
    (root / "cmpnet.py").write_text(textwrap.dedent(NET))
    sys.path.insert(0, str(root))
    try:
        import cmpnet

        torch.manual_seed(0)
        st = _fit(cmpnet.build(), 0.0)
        torch.manual_seed(1)
        at = _fit(cmpnet.build(), 0.2)
    finally:
        sys.path.remove(str(root))
    torch.save(st.state_dict(), root / "st.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(at), str(root / "at.ts"))
    runs = root / "runs"
    st_run = import_file(
        "st", dataset="digits", factory=f"{root / 'cmpnet.py'}:build", weights=root / "st.pt", out=runs
    )
    at_run = import_file("at", dataset="digits", model_file=root / "at.ts", out=runs)
    return st_run, at_run


def test_compare_an_imported_pair_into_a_report(pair, tmp_path, capsys):
    st, at = pair
    out = tmp_path / "cmp"
    argv = ["compare", "--st", str(st.dir), "--at", str(at.dir), "--out", str(out), "--n", "80", "--n-iter", "10"]
    assert main([*argv, "--manifolds", "--p", "10", "--m", "4", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert (out / "report" / "index.html").is_file()
    # table 1 is the protocol's own summaries of the two runs (the oracle: their eval JSON)
    summaries = {r.dir.name: json.loads((r.dir / "eval" / "paper-epoch_001.json").read_text()) for r in pair}
    table = list(csv.reader((out / "report" / "tables" / "table1.csv").open()))
    rows = {row[0]: row for row in table[1:]}
    for label, run in (("ST", st), ("AT", at)):
        s = summaries[run.dir.name]
        assert s["n"] == 80
        assert rows[label][3] == f"{100 * s['clean_acc']:.1f}% (n=1)"
        assert rows[label][5] == f"{100 * s['robust_acc']:.1f}% (n=1)"
    assert summaries[at.dir.name]["robust_acc"] > summaries[st.dir.name]["robust_acc"]
    claims = {row["id"]: row for row in csv.DictReader((out / "report" / "claims.csv").open())}
    assert {"table1-robust", "max-logit-mean", "gap-smaller", "rank-disagreement-at-st"} <= set(claims)
    assert "manifold-radius-early" in claims and "fix1-drop" not in claims
    assert claims["table1-robust"]["verdict"] == "inconclusive"  # one model per group: no interval
    assert "no interval" in claims["table1-robust"]["statistic"]
    for name in ("fig1_max_logit_evolution", "fig2a_gap_histograms", "fig2b_adv_acc_by_gap", "fig3b_rank_disagreement"):
        assert (out / "report" / "figures" / f"{name}.png").is_file()
    manifolds = json.loads((out / "manifolds" / "manifolds.json").read_text())
    assert manifolds["models"]["ST"]["layer_order"] == ["input", "features", "hidden", "head", "logits"]
    assert manifolds["models"]["AT"]["layer_order"] == ["input", "logits"]  # TorchScript, not a sequence


def test_a_failed_evaluation_is_reported_and_the_rest_finishes(pair, tmp_path, monkeypatch):
    import logitscope.evaluation
    from logitscope.compare import compare

    st, at = pair
    real = logitscope.evaluation.evaluate

    def flaky(run, **kwargs):
        if Path(run).name == at.dir.name:
            raise RuntimeError("simulated out of memory")
        return real(run, **kwargs)

    monkeypatch.setattr(logitscope.evaluation, "evaluate", flaky)
    result = compare([st.dir], [at.dir], tmp_path / "cmp", n=40, n_iter=5, device="cpu")
    assert list(result["failed"]) == [f"eval-train-at-{at.dir.name}"]
    assert "simulated out of memory" in result["failed"][f"eval-train-at-{at.dir.name}"]
    claims = {row["id"]: row for row in csv.DictReader((tmp_path / "cmp" / "report" / "claims.csv").open())}
    assert claims["table1-robust"]["verdict"] == "failed"
    assert claims["max-logit-mean"]["verdict"] != "failed"  # the analysis finished without the evaluation
    assert (tmp_path / "cmp" / "report" / "figures" / "fig1_max_logit_evolution.png").is_file()
    assert "Stages that failed" in (tmp_path / "cmp" / "report" / "index.html").read_text()


def test_compare_refuses_runs_of_other_datasets(pair, tmp_path):
    from logitscope.compare import compare
    from logitscope.importing import import_model

    st, _ = pair
    npz = tmp_path / "d.npz"
    x, y = get_dataset("digits").split("test")
    import numpy as np

    np.savez(npz, x_train=x.numpy(), y_train=y.numpy(), x_test=x.numpy(), y_test=y.numpy())
    other = import_model(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), "npz", "o", data_dir=npz, out=tmp_path
    )
    with pytest.raises(ValueError, match="is on dataset npz"):
        compare([st.dir], [other.dir], tmp_path / "cmp")
    with pytest.raises(ValueError, match="expected at least one of each"):
        compare([st.dir], [], tmp_path / "cmp")


def test_compare_refuses_a_run_twice_an_unfinished_run_and_differing_radii(pair, tmp_path):
    import shutil

    from logitscope.compare import compare
    from logitscope.importing import import_file
    from logitscope.store.runs import Run

    st, at = pair
    with pytest.raises(ValueError, match=r"is given twice \(--st and --at\)"):
        compare([st.dir], [st.dir], tmp_path / "cmp")
    unfinished = tmp_path / "unfinished" / st.dir.name
    shutil.copytree(st.dir, unfinished, symlinks=True)
    Run(unfinished).update_meta(status="running")
    with pytest.raises(ValueError, match="is not complete"):
        compare([unfinished], [at.dir], tmp_path / "cmp")
    ts = Path(at.config.source.file)
    other = import_file("at", dataset="digits", model_file=ts, eps=0.1, out=tmp_path / "runs")
    assert other.dir.name != at.dir.name  # another radius: another run of the same model
    with pytest.raises(ValueError, match=r"attack radii differ .* give one for all with --eps"):
        compare([st.dir], [other.dir], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
