"""The loss-curve PNG: a valid image of the documented size, series with gaps, and which keys go to which panel."""

from __future__ import annotations

import pytest
from PIL import Image

from vltk.train.plot import plot_metrics, split_series


def metrics_lines() -> list[dict[str, float]]:
    """Lines as the training loop writes them; the i2t terms appear in steps 20 and 40 only (a task drawn sometimes)."""
    lines = []
    for step in (10, 20, 30, 40):
        line = {"step": step, "loss": 5.0 / step, "t2i/image": 4.0 / step, "t2i/image_acc": step / 100,
                "lr/model": 1e-4, "grad_norm/model": 0.5, "seconds": 1.5 * step, "tokens_per_s": 1234.5}
        if step % 20 == 0:
            line |= {"i2t/text": 3.0 / step, "i2t/text_acc": step / 50}
        lines.append(line)
    return lines


def test_png_is_written_with_the_documented_size(tmp_path):
    file = tmp_path / "loss.png"
    plot_metrics(metrics_lines(), file, title="magvlt tiny")
    with Image.open(file) as image:
        image.verify()  # a well-formed PNG (raises otherwise)
    with Image.open(file) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 450)  # the module docstring's promise
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]  # no temporary file left behind


def test_overwrites_an_existing_plot(tmp_path):
    file = tmp_path / "loss.png"
    file.write_bytes(b"not a png")
    plot_metrics(metrics_lines()[:1], file)
    with Image.open(file) as image:
        assert image.format == "PNG"


def test_series_skip_missing_steps_and_bookkeeping_keys():
    losses, accuracies = split_series(metrics_lines())
    assert set(losses) == {"loss", "t2i/image", "i2t/text"}
    assert set(accuracies) == {"t2i/image_acc", "i2t/text_acc"}
    assert losses["i2t/text"] == ([20, 40], [0.15, 0.075])
    assert accuracies["t2i/image_acc"] == ([10, 20, 30, 40], [0.1, 0.2, 0.3, 0.4])


def test_only_losses_leaves_an_empty_accuracy_panel(tmp_path):
    plot_metrics([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_empty_lines_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no metrics lines"):
        plot_metrics([], tmp_path / "loss.png")
    assert not (tmp_path / "loss.png").exists()


def test_lines_without_a_step_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="'step'"):
        plot_metrics([{"loss": 1.0}], tmp_path / "loss.png")
