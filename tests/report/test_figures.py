"""Every logit-analysis figure renders a real PNG without a display."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from logitscope.analysis.logit_stats import adversarial_accuracy_by_gap, logit_statistics, stack_histograms
from logitscope.analysis.neighbors import confidence_quadrants, logit_neighbors, pick_seeds
from logitscope.analysis.ranks import (
    confidence,
    error_class_rank,
    pairwise_average_overlap,
    pairwise_rank_disagreement,
    rank_scatter,
)
from logitscope.report import figures
from logitscope.store.logits import LogitStore, write_labels, write_logits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N, C = 40, 4
LABELS = np.repeat(np.arange(C), N // C)


def _check_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].std() > 0.02  # something was drawn
    return img


def _logits(seed: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C)) + scale * np.eye(C)[LABELS]).astype(np.float32)


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    out = {}
    for group, scale in (("ST", 5.0), ("AT", 1.0)):
        write_labels(root / group, "train", LABELS)
        for e in range(4):
            write_logits(root / group, "train", e, _logits(e, scale * (e + 1) / 4))
        out[group] = logit_statistics(LogitStore(root / group), "train", n_bins=12)
    return out


def test_evolution_figures(stats, tmp_path):
    _check_png(figures.fig1_max_logit_evolution(stats["ST"]["max_logit"], stats["AT"]["max_logit"], tmp_path / "1.png"))
    panels = [("ST train", stats["ST"]["gap"]), ("AT train", stats["AT"]["gap"]), ("AT test", stats["AT"]["gap"])]
    _check_png(figures.figb1_gap_evolution(panels, tmp_path / "b1.png"))
    with pytest.raises(ValueError, match="no panels"):
        figures.figb1_gap_evolution([], tmp_path / "none.png")


def test_gap_figures(stats, tmp_path):
    st_h = stack_histograms([stats["ST"]["gap"], stats["ST"]["gap"]], epoch=2)
    _check_png(figures.fig2a_gap_histograms(st_h, stack_histograms([stats["AT"]["gap"]]), tmp_path / "2a.png"))
    st_z, at_z = _logits(0, 5.0), _logits(1, 1.0)
    robust = at_z.argmax(axis=1) == LABELS
    at = adversarial_accuracy_by_gap([{"clean_logits": at_z, "robust": robust}], np.linspace(0, 3, 5))
    st = adversarial_accuracy_by_gap([{"clean_logits": st_z, "robust": np.zeros(N, bool)}], at.edges)
    _check_png(figures.fig2b_adv_acc_by_gap(at, tmp_path / "2b.png", st))
    _check_png(figures.fig2b_adv_acc_by_gap(at, tmp_path / "2b_at_only.png"))


def test_rank_figures(tmp_path):
    zs = [_logits(0, 3.0), _logits(1, 3.0), _logits(2, 1.0), _logits(3, 1.0)]
    names, groups = ["s0", "s1", "a0", "a1"], ["ST", "ST", "AT", "AT"]
    conf = [confidence(z, LABELS) for z in zs]
    _check_png(figures.fig3a_rank_scatter(rank_scatter(conf[2], conf[0], LABELS, 1), tmp_path / "3a.png", "frog"))
    rd = pairwise_rank_disagreement(zs, LABELS, names, groups)
    _check_png(figures.fig3b_rank_disagreement(rd, tmp_path / "3b.png", ["cat", "dog", "frog", "ship"]))
    _check_png(figures.fig3b_rank_disagreement(rd, tmp_path / "3b_numbers.png"))
    errors = {
        "ST natural": [error_class_rank(z, LABELS) for z in zs[:2]],
        "AT natural": [error_class_rank(z, LABELS) for z in zs[2:]],
        "AT adversarial": [error_class_rank(zs[2], LABELS, np.roll(LABELS, 1))],
    }
    _check_png(figures.fig3c_error_class_rank(errors, tmp_path / "3c.png"))
    with pytest.raises(ValueError, match="no error-class"):
        figures.fig3c_error_class_rank({"ST natural": []}, tmp_path / "none.png")
    ao = pairwise_average_overlap(zs, LABELS, names, groups)
    _check_png(figures.fig3d_average_overlap(ao, tmp_path / "3d.png", "CIFAR-100"))


@pytest.mark.parametrize("channels", [1, 3])
def test_image_figures(tmp_path, channels):
    images = np.random.default_rng(0).integers(0, 256, (N, channels, 8, 8), dtype=np.uint8)
    st_z, at_z = _logits(0, 3.0), _logits(1, 1.0)
    quads = confidence_quadrants(confidence(at_z, LABELS), confidence(st_z, LABELS), LABELS, cls=2, per_quadrant=4)
    img = _check_png(figures.figb2_confidence_quadrants(images, quads, tmp_path / "b2.png", "frog"))
    assert img.shape[0] > 300
    nb = logit_neighbors({"ST": st_z, "AT": at_z}, pick_seeds(LABELS, 3), k=5)
    _check_png(figures.figb3_neighbors(images, nb, tmp_path / "b3.png", LABELS, ["a", "b", "c", "d"]))


def test_image_figures_reject_bad_images(tmp_path):
    nb = logit_neighbors({"ST": _logits(0, 1.0)}, np.array([0]), k=2)
    with pytest.raises(ValueError, match="uint8"):
        figures.figb3_neighbors(np.zeros((N, 2, 8, 8), np.uint8), nb, tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8"):
        figures.figb3_neighbors(np.zeros((N, 3, 8, 8), np.float32), nb, tmp_path / "x.png")


def test_save_figure_is_atomic_png(tmp_path):
    fig = figures.new_figure(2, 2)
    fig.subplots().plot([0, 1], [1, 0])
    path = figures.save_figure(fig, tmp_path / "sub" / "line.png")
    _check_png(path)
    assert [p.name for p in path.parent.iterdir()] == ["line.png"]


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


@pytest.mark.filterwarnings("error")
def test_one_run_or_pair_shows_no_sd_and_no_nan(stats, tmp_path, monkeypatch):
    """sd over runs is undefined for one run (NaN): no band, no error bar, no "nan" text, no warning."""
    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path))
    one = stack_histograms([stats["ST"]["gap"]])
    _check_png(figures.fig2a_gap_histograms(one, stack_histograms([stats["AT"]["gap"]]), tmp_path / "2a.png"))
    zs = [_logits(0, 3.0), _logits(2, 1.0)]
    rd = pairwise_rank_disagreement(zs, LABELS, ["s0", "a0"], ["ST", "AT"])
    _check_png(figures.fig3b_rank_disagreement(rd, tmp_path / "3b.png"))
    _check_png(figures.fig3c_error_class_rank({"AT natural": [error_class_rank(zs[1], LABELS)]}, tmp_path / "3c.png"))
    ao = pairwise_average_overlap(zs, LABELS, ["s0", "a0"], ["ST", "AT"])
    _check_png(figures.fig3d_average_overlap(ao, tmp_path / "3d.png"))
    texts = [t for fig in drawn for t in _texts(fig)]
    assert not [t for t in texts if "nan" in t.lower()]
    assert any(t.startswith("AT-ST: ") and t.endswith("(1 pair)") for t in texts)
