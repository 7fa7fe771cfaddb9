"""Distillation figures render PNGs with the paper's encodings."""

import numpy as np
import pytest
from matplotlib.image import imread

from logitscope.distill.transforms import apply_transform
from logitscope.report.figures_distill import (
    LABEL_COLOR,
    MANIPULATED_COLOR,
    fig4a_target_transforms,
    fig4b_accuracy_vs_k,
    figA6_teacher_epoch,
    figA7_l1_vs_kl,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _has_color(img: np.ndarray, hex_color: str) -> bool:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return bool(np.any(np.all(np.abs(img[..., :3] - rgb) < 2 / 255, axis=-1)))


def _check_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # not blank
    return img


def test_fig4a_colors_label_blue_and_manipulated_orange(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=(1, 10)).astype(np.float32)
    y = np.array([int(t.argmax())])
    panels = {"original": t[0]}
    for name in ("fix-3-permute", "fix-3-average", "correct-fix-1"):
        panels[name] = apply_transform(name, t, y, seed=1)[0][0]
    path = fig4a_target_transforms(panels, int(y[0]), tmp_path / "fig4a.png")
    img = _check_png(path)
    assert _has_color(img, LABEL_COLOR) and _has_color(img, MANIPULATED_COLOR)
    only_original = fig4a_target_transforms({"original": t[0]}, 0, tmp_path / "orig.png")
    assert not _has_color(_check_png(only_original), MANIPULATED_COLOR)


def test_fig4a_explicit_manipulated_masks_and_class_names(tmp_path):
    v = np.arange(10, dtype=float)
    mask = np.zeros(10, dtype=bool)
    mask[2:5] = True
    path = fig4a_target_transforms(
        {"a": v, "b": v},
        9,
        tmp_path / "f.png",
        manipulated={"b": mask},
        class_names=[f"c{i}" for i in range(10)],
    )
    assert _has_color(_check_png(path), MANIPULATED_COLOR)


def test_fig4b_renders_with_and_without_the_optional_series(tmp_path):
    permute = {1: [0.12, 0.14], 3: [0.22, 0.25], 7: [0.30, 0.29], 10: [0.31, 0.30]}
    average = {1: [0.10], 3: [0.2, 0.21, 0.19]}
    _check_png(fig4b_accuracy_vs_k(permute, tmp_path / "b.png", average, normal=[0.30, 0.31]))
    _check_png(fig4b_accuracy_vs_k(permute, tmp_path / "b2.png"))


def test_figA6_and_figA7_render(tmp_path):
    nat = {20: [0.7, 0.72], 40: [0.75, 0.76], 200: [0.8]}
    adv = {20: [0.38, 0.4], 40: [0.30, 0.31], 200: [0.0, 0.01]}
    _check_png(figA6_teacher_epoch(nat, adv, tmp_path / "a6.png"))
    path = figA7_l1_vs_kl(
        {"l1": nat, "kl": nat},
        {"l1": adv, "kl": {20: [0.2], 40: [0.1]}},
        tmp_path / "sub" / "a7.png",
    )
    _check_png(path)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: fig4a_target_transforms({}, 0, p), "at least one panel"),
        (lambda p: fig4a_target_transforms({"a": np.zeros(3)}, 3, p), "label=3"),
        (lambda p: fig4a_target_transforms({"a": np.zeros(3), "b": np.zeros(4)}, 0, p), "'b'"),
        (lambda p: fig4b_accuracy_vs_k({1: [31.0]}, p), "fractions in \\[0, 1\\]"),
        (lambda p: fig4b_accuracy_vs_k({1: []}, p), "no values"),
        (lambda p: figA6_teacher_epoch({}, {1: [0.1]}, p), "no entries"),
        (lambda p: figA7_l1_vs_kl({"l1": {1: [0.1]}}, {"kl": {1: [0.1]}}, p), "same non-empty"),
    ],
)
def test_bad_inputs_raise_one_line(tmp_path, call, match):
    with pytest.raises(ValueError, match=match) as err:
        call(tmp_path / "x.png")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.filterwarnings("error")
def test_single_seeds_draw_no_sd_and_no_nan(tmp_path, monkeypatch):
    """One seed: sd undefined (NaN), drawn without error bar or band, labelled n=1, no warning."""
    from matplotlib.text import Text

    from logitscope.report import figures_distill

    drawn = []
    save = figures_distill._save
    monkeypatch.setattr(figures_distill, "_save", lambda fig, path: drawn.append(fig) or save(fig, path))
    one = {1: [0.12], 3: [0.22], 7: [0.30]}
    _check_png(fig4b_accuracy_vs_k(one, tmp_path / "b.png", one, normal=[0.30]))
    _check_png(figA6_teacher_epoch({20: [0.7], 40: [0.75]}, {20: [0.38], 40: [0.3]}, tmp_path / "a6.png"))
    _check_png(figA7_l1_vs_kl({"l1": {20: [0.7]}}, {"l1": {20: [0.38]}}, tmp_path / "a7.png"))
    texts = [t.get_text() for fig in drawn for t in fig.findobj(Text)]
    assert "normal distillation (n=1)" in texts
    assert not [t for t in texts if "nan" in t.lower()]
