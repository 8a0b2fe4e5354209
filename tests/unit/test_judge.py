"""The shapes judge: exact on renders, robust to JPEG, wrong on wrong images, right on shapes drawn by hand."""

import io
import random
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from vltk.data import shapes
from vltk.metrics.judge import CaptionSpec, Mention, check, detect, judge, parse_caption, summarize


def scenes_with_captions(seed: int, count: int) -> list[tuple[shapes.Scene, list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        scene = shapes.sample_scene(rng, min_objects=1, max_objects=3)
        out.append((scene, shapes.write_captions(scene, rng, k=4)))
    return out


def accuracy(pairs, image_of) -> dict:
    """summarize() over every caption; the same as judge(image, caption) for each, detecting each image once."""
    verdicts = []
    for scene, captions in pairs:
        found = detect(image_of(scene))
        verdicts += [check(caption, parse_caption(caption), found) for caption in captions]
    return summarize(verdicts)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.mark.parametrize("size", [32, 64])
def test_clean_renders_are_judged_right(size):
    result = accuracy(scenes_with_captions(seed=size, count=200), lambda scene: shapes.render(scene, size))
    assert result["captions"] == 800
    assert result["whole"] >= 0.99, result  # measured: 1.0 on 2,000 scenes at 32, 48, 64 and 256 px


@pytest.mark.parametrize("degrade", ["jpeg", "blur"])
def test_degraded_renders_are_judged_right(degrade):
    # JPEG q75 at 32 px subsamples colour to 16x16 and desaturates small shapes. Measured: 100% whole-caption on
    # 8,000 captions (2,000 scenes; 99.9% with MAX_COLOR_DISTANCE at 60). A Gaussian blur of 0.8 px (a soft
    # reconstruction) rounds the corners of 7 px squares: 100% on 4,000 captions. 98% leaves room for other seeds.
    def image_of(scene):
        image = shapes.render(scene, 32)
        return jpeg(image, 75) if degrade == "jpeg" else image.filter(ImageFilter.GaussianBlur(0.8))

    result = accuracy(scenes_with_captions(seed=75, count=200), image_of)
    assert result["whole"] >= 0.98, result
    assert result["shape"] >= 0.99 and result["count"] == 1.0, result


def test_captions_paired_with_other_images_are_wrong():
    pairs = scenes_with_captions(seed=7, count=200)
    shifted = [(other_scene, captions) for (_, captions), (other_scene, _) in zip(pairs, pairs[1:] + pairs[:1])]
    result = accuracy(shifted, lambda scene: shapes.render(scene, 32))
    assert result["whole"] < 0.05, result  # measured 0.05% on 8,000 mismatched captions
    assert result["color"] < 0.5 and result["shape"] < 0.6, result


def hand_drawn(size: int, background: tuple[int, int, int]) -> Image.Image:
    """Drawn with PIL's own primitives at 8x and Lanczos-downsampled, not with the data set's renderer.

    Top left: a circle of diameter 3/8 of the side (large); top right: an apex-up triangle 3/16 wide and tall (small);
    bottom right: a square of side 3/16 (small). Colours are near, not equal to, the named ones.
    """
    big = size * 8
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    u = big / 64  # drawing units: the image is 64 units wide
    draw.ellipse([4 * u, 4 * u, 28 * u, 28 * u], fill=(235, 35, 30))
    draw.polygon([(48 * u, 10 * u), (42 * u, 22 * u), (54 * u, 22 * u)], fill=(235, 215, 60))
    draw.rectangle([42 * u, 42 * u, 54 * u, 54 * u], fill=(45, 95, 240))
    return image.resize((size, size), Image.Resampling.LANCZOS)


@pytest.mark.parametrize("size,background", [(32, (0, 0, 0)), (64, (25, 25, 25)), (200, (60, 50, 40))])
def test_hand_drawn_shapes_are_detected(size, background):
    found = [(d.shape, d.color, d.size, d.row, d.col) for d in detect(hand_drawn(size, background))]
    assert found == [("circle", "red", "large", 0, 0), ("triangle", "yellow", "small", 0, 1),
                     ("square", "blue", "small", 1, 1)]


def test_hand_drawn_image_against_hand_written_captions():
    image = np.asarray(hand_drawn(64, (0, 0, 0)))  # arrays work as well as PIL images
    right = [
        "a large red circle in the top left, a small yellow triangle in the top right and a small blue square "
        "in the bottom right",
        "There is a small blue square below a small yellow triangle and a large red circle at the upper left.",
        "a large red circle to the left of a small yellow triangle and a small blue square in the lower right",
    ]
    wrong = {
        "a small red circle in the top left, a small yellow triangle in the top right and a small blue square "
        "in the bottom right": "size",
        "a small blue square above a small yellow triangle and a large red circle at the upper left": "position",
        "a large red circle to the left of a small yellow square and a small blue square in the lower right": "shape",
        "a large red circle in the top left and a small yellow triangle in the top right": "count",
        "a large green circle to the right of a small yellow triangle and a small blue square in the lower right":
            "color",
    }
    for caption in right:
        verdict = judge(image, caption)
        assert verdict.correct, verdict
    for caption, attribute in wrong.items():
        verdict = judge(image, caption)
        assert not verdict.correct, caption
        assert getattr(verdict, attribute) < 1, (attribute, verdict)


def test_blank_and_odd_images_fail():
    blank = Image.new("RGB", (32, 32), shapes.BACKGROUND)
    assert detect(blank) == []
    assert not judge(blank, "a small red circle in the top left").correct
    # An upside-down triangle and a 2:1 bar are blobs no outline of the vocabulary fits.
    image = Image.new("RGB", (256, 256), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.polygon([(10, 10), (110, 10), (60, 110)], fill=(225, 40, 40))
    draw.rectangle([138, 30, 246, 84], fill=(225, 40, 40))
    found = detect(image.resize((32, 32), Image.Resampling.BOX))
    assert [(d.shape, d.color, d.row, d.col) for d in found] == [(None, "red", 0, 0), (None, "red", 0, 1)]


def test_unparseable_captions_are_wrong():
    image = shapes.render(shapes.sample_scene(random.Random(0), min_objects=1, max_objects=1), 32)
    for caption in ["a dog on a sofa", "a small red circle in the middle", "a red circle in the top left",
                    "a small red circle above", ""]:
        assert parse_caption(caption) is None, caption
        verdict = judge(image, caption)
        assert (verdict.parsed, verdict.correct, verdict.shape, verdict.position) == (False, False, 0.0, 0.0)


def test_parse_caption_reads_the_grammar():
    assert parse_caption("There is a small red circle above a large blue square.") == CaptionSpec(
        objects=(Mention("circle", "red", "small"), Mention("square", "blue", "large")),
        places=(), relations=((0, "above", 1),),
    )
    # Spaces around commas, as a BPE decoder writes them, and synonyms of the rows.
    assert parse_caption("a large cyan triangle at the lower left , a small green square to the right of "
                         "a small purple circle") == CaptionSpec(
        objects=(Mention("triangle", "cyan", "large"), Mention("square", "green", "small"),
                 Mention("circle", "purple", "small")),
        places=((0, 1, 0),), relations=((1, "right", 2),),
    )


def test_relations_mean_rows_and_columns():
    spec = parse_caption("a small red circle above a large blue square")
    a = SimpleNamespace(shape="circle", color="red", size="small", row=0, col=1)
    b = SimpleNamespace(shape="square", color="blue", size="large", row=1, col=0)
    assert check("", spec, [a, b]).correct  # diagonal: a's row is above b's
    assert check("", spec, [b, a]).correct  # the order of detections does not matter
    same_row = SimpleNamespace(shape="square", color="blue", size="large", row=0, col=0)
    verdict = check("", spec, [a, same_row])
    assert not verdict.correct and verdict.position == 0.0 and verdict.shape == 1.0
    left = parse_caption("a small red circle to the left of a large blue square")
    right = parse_caption("a small red circle to the right of a large blue square")
    assert not check("", left, [a, b]).correct and check("", right, [a, b]).correct  # a's column is right of b's
    assert check("", right, [a, same_row]).correct and not check("", left, [a, same_row]).correct


def test_summarize_averages_verdicts():
    spec = parse_caption("a small red circle in the top left")
    obj = SimpleNamespace(shape="circle", color="red", size="small", row=0, col=0)
    blue = SimpleNamespace(shape="circle", color="blue", size="small", row=0, col=0)
    verdicts = [check("x", spec, [obj]), check("x", spec, [blue]), check("x", None, [obj]), check("x", spec, [])]
    assert summarize(verdicts) == {"captions": 4, "whole": 0.25, "parsed": 0.75, "count": 0.5,
                                   "shape": 0.5, "color": 0.25, "size": 0.5, "position": 0.5}
