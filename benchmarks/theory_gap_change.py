"""Part 4 of issue 7 on real models: FGSM gap change against the clean gap, ST vs AT (digits).

Trains a small CNN on the embedded digits dataset twice, with standard training (ST) and with
PGD adversarial training (AT: eps 0.2, 7 steps of eps/4), using DESIGN.md's recipe (SGD lr 0.05,
momentum 0.9, weight decay 5e-4, batch 64), then measures every test sample's logit-gap change
under one FGSM step of small eps (``logitscope.theory.fgsm_gap``) and fits the paper's law
``change = slope * gap^2 + intercept``. Writes the scatter beside the printed JSON.

    .venv/bin/python benchmarks/theory_gap_change.py            # 30 epochs each (a few minutes)
    .venv/bin/python benchmarks/theory_gap_change.py --quick    # 4 epochs each (under a minute)

The last line of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from logitscope.attacks.pgd import pgd
from logitscope.data.digits import load_digits_dataset
from logitscope.models.small import small_cnn
from logitscope.report.figures import save_figure
from logitscope.report.figures_theory import figure_gap_change
from logitscope.theory.fgsm_gap import measure_gap_change

SETTINGS = {
    "lr": 0.05,  # SGD learning rate
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch": 64,  # images per step
    "at_eps": 0.2,  # L-inf radius of adversarial training, [0, 1] pixel scale
    "at_steps": 7,  # PGD steps of at_eps / 4
}


def train(method: str, epochs: int, seed: int) -> tuple[torch.nn.Module, float]:
    """Train one small CNN on digits; returns the model (eval mode) and the seconds taken."""
    data = load_digits_dataset()
    x = data.x_train.float() / 255.0
    y = data.y_train
    torch.manual_seed(seed)
    model = small_cnn(data.n_classes, 1, data.mean, data.std)
    opt = torch.optim.SGD(
        model.parameters(), lr=SETTINGS["lr"], momentum=SETTINGS["momentum"], weight_decay=SETTINGS["weight_decay"]
    )
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), SETTINGS["batch"]):
            idx = order[i : i + SETTINGS["batch"]]
            xb, yb = x[idx], y[idx]
            if method == "at":
                eps = SETTINGS["at_eps"]
                xb = pgd(model, xb, yb, eps, eps / 4, SETTINGS["at_steps"], generator=gen)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 epochs per model")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.005, 0.02], help="FGSM steps ([0, 1] scale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    args = parser.parse_args()
    epochs = args.epochs or (4 if args.quick else 30)
    data = load_digits_dataset()
    x_test = data.x_test.float() / 255.0
    y_test = data.y_test
    args.out.mkdir(parents=True, exist_ok=True)
    headline: dict[str, object] = {"epochs": epochs, "n_test": len(y_test)}
    models = {}
    for name in ("ST", "AT"):
        model, secs = train(name.lower(), epochs, args.seed)
        models[name] = model
        with torch.no_grad():
            acc = float((model(x_test).argmax(1) == y_test).float().mean())
        headline[f"{name}_train_s"] = round(secs, 1)
        headline[f"{name}_test_acc"] = round(acc, 4)
    for eps in args.eps:
        results = {name: measure_gap_change(model, x_test, y_test, eps) for name, model in models.items()}
        save_figure(figure_gap_change(results), args.out / f"theory_gap_change_eps{eps:g}.png", dpi=120)
        for name, res in results.items():
            ok = res["correct"]
            tag = f"{name}_eps{eps:g}"
            headline[f"{tag}_gap_mean"] = round(float(res["gap_before"][ok].mean()), 3)
            headline[f"{tag}_change_mean"] = round(float(res["change"][ok].mean()), 4)
            headline[f"{tag}_slope"] = float(f"{float(res['fit_slope']):.4g}")
            headline[f"{tag}_r2_gap2"] = round(float(res["fit_r2"]), 3)
            headline[f"{tag}_r2_gap"] = round(float(res["linear_fit_r2"]), 3)
            headline[f"{tag}_power"] = round(float(res["power_exponent"]), 3)
            headline[f"{tag}_linear_response_r2"] = round(float(res["linear_response_r2"]), 3)
            headline[f"{tag}_fraction_shrunk"] = round(float((res["change"][ok] < 0).mean()), 3)
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
