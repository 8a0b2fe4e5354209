"""The shapes judge: reads a picture of the built-in data set back into objects and checks a caption against it.

    verdict = judge(Image.open("samples/000001.png"), "a small red circle above a large blue square")
    verdict.correct, verdict.shape, verdict.position      # True, 1.0, 1.0
    summarize([verdict, ...])                              # {"whole": 0.93, "shape": 0.97, ...}
    describe(detect(Image.open("samples/000001.png")))   # "2 objects: small red circle top left, large ..."

`detect` works at 32 px. It segments each grid cell against the background (estimated from the image border), takes
the object's colour from the median of the pixels farthest from the background (then the nearest named colour), turns
the cell into a soft coverage map (each pixel's share of that colour), and fits each shape's outline to it: the
outline gets the coverage's area and centroid, so only the shape hypothesis varies, and the smallest L1 mismatch wins.
Area and centroid survive blur, JPEG and tokenizer reconstructions; a blob that no outline fits, or a colour far from
every named one, is reported as unknown and so never matches a caption. `parse_caption` reads the caption grammar of
`vltk.data.shapes`; `check` finds the best assignment of mentioned objects to detected ones and scores each fact.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from typing import Iterable, Protocol, Sequence

import numpy as np
from PIL import Image

from vltk.data.shapes import (
    COL_WORDS, COLORS, GRID, RELATION_WORDS, ROW_WORDS, SHAPES, SIZES, outline, relation_holds,
)

WORK_SIZE = 32  # larger images are box-filtered down to this side first, so every size is judged at one scale
MIN_CONTRAST = 48.0  # RGB distance from the background that a cell's most distant pixels need to hold an object
MIN_AREA = 0.008  # of the image; the smallest object (a small triangle) covers ~0.023
# Beyond this RGB distance from every named colour (they are >= 110 apart) the colour is unknown. JPEG q75 at 32 px
# desaturates small shapes by up to 59; a brown (140, 90, 40), a desaturated red, is still read as red.
MAX_COLOR_DISTANCE = 65.0
MIN_COLOR_SHARE = 0.75  # a colour mixed with less than this share of a named colour (and the rest background) is not it
# Outlines are compared blurred by this Gaussian (sigma, px at the working size); see `_fit_shape`.
TEMPLATE_BLUR = 0.8
# Blurred L1 mismatch / area beyond which no outline fits. Measured: renders <= 0.1 (32-256 px), JPEG q75 at 32 px
# <= 0.18, Gaussian blur sigma 1 px <= 0.19; a 2:1 bar 0.48, a plus 0.52, an upside-down triangle 0.33, two blobs 1.7.
MAX_MISFIT = 0.3
SIZE_THRESHOLD = math.sqrt(SIZES["small"] * SIZES["large"])  # on the fitted extent, as a fraction of the image side
_SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Detection:
    shape: str | None  # None: no outline fits
    color: str | None  # None: far from every named colour
    size: str
    row: int
    col: int
    extent: float  # fitted bounding-box side, as a fraction of the image side
    rgb: tuple[int, int, int]
    misfit: float  # blurred L1 mismatch of the best outline / area


@dataclasses.dataclass(frozen=True)
class Mention:
    shape: str
    color: str
    size: str


@dataclasses.dataclass(frozen=True)
class CaptionSpec:
    objects: tuple[Mention, ...]
    places: tuple[tuple[int, int, int], ...]  # (object index, row, col)
    relations: tuple[tuple[int, str, int], ...]  # (object index, relation in shapes.RELATIONS, object index)


@dataclasses.dataclass(frozen=True)
class Verdict:
    caption: str
    parsed: bool
    mentioned: int  # objects the caption names
    found: int  # objects detected in the image
    count: bool
    shape: float  # fraction of mentioned objects whose attribute holds under the best assignment
    color: float
    size: float
    position: float  # fraction of stated places and relations that hold
    correct: bool  # every stated fact holds and the counts match


class Placed(Protocol):
    shape: str | None
    color: str | None
    size: str
    row: int
    col: int


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255], at most WORK_SIZE on its longer side."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if max(image.size) > WORK_SIZE:
        scale = WORK_SIZE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _background(pixels: np.ndarray) -> np.ndarray:
    # Shapes stay inside their cells, so the outer ring of the image is (nearly all) background.
    ring = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return np.median(ring, axis=0)


@functools.cache
def _unit_geometry(shape: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Outline vertices (V, 2) in the unit box, its area, and its centroid relative to the box centre."""
    v = np.asarray(outline(shape), dtype=np.float64)
    x, y = v[:, 0], v[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    centroid = np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6 * area)
    return v, abs(area), centroid


def _coverage(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) share of each pixel inside convex polygon `vertices` (pixel units; pixel i spans [i, i+1))."""
    sub = (np.arange(max(height, width) * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    ys, xs = sub[: height * _SUPERSAMPLE, None], sub[None, : width * _SUPERSAMPLE]
    sides = []
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        sides.append((x2 - x1) * (ys - y1) - (y2 - y1) * (xs - x1) >= 0)
    sides = np.stack(sides)
    inside = sides.all(axis=0) | (~sides).all(axis=0)  # either winding
    return inside.reshape(height, _SUPERSAMPLE, width, _SUPERSAMPLE).mean(axis=(1, 3))


def _blur_matrix(n: int) -> np.ndarray:
    """(n, n) Gaussian weights (sigma TEMPLATE_BLUR px, zero outside): M_h @ a @ M_w.T blurs an (h, w) image."""
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    return np.exp(-0.5 * (offsets / TEMPLATE_BLUR) ** 2) / (TEMPLATE_BLUR * math.sqrt(2 * math.pi))


def _fit_shape(alpha: np.ndarray, side: float) -> tuple[str | None, float, float]:
    """Best outline for coverage `alpha` (h, w): (shape or None, fitted extent / side, misfit).

    Each outline is placed with the coverage's area and centroid. The shape is the one whose blurred outline is
    closest to the coverage as it is: blur, JPEG and tokenizers round corners, and a sharp outline would take a soft
    square for a circle. It is rejected when, with both blurred alike (so the image's own softness does not count), it
    still misses by more than MAX_MISFIT of the area.
    """
    h, w = alpha.shape
    blur_h, blur_w = _blur_matrix(h), _blur_matrix(w)
    area = alpha.sum()
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    centre = np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / area
    fits = []
    for shape in SHAPES:
        unit, unit_area, unit_centroid = _unit_geometry(shape)
        extent = math.sqrt(area / unit_area)
        blurred = blur_h @ _coverage((centre - extent * unit_centroid) + extent * unit, h, w) @ blur_w.T
        fits.append((float(np.abs(alpha - blurred).sum()), shape, extent, blurred))
    _, shape, extent, blurred = min(fits, key=lambda fit: fit[0])
    misfit = float(np.abs(blur_h @ alpha @ blur_w.T - blurred).sum() / area)
    return (shape if misfit <= MAX_MISFIT else None), extent / side, misfit


def _nearest_color(rgb: np.ndarray, background: np.ndarray) -> str | None:
    """The named colour whose mix with the background comes closest to `rgb` (None if none is near).

    Blur and reconstructions mix a small shape's interior with the background, so `rgb` is compared with the segment
    from the background to each named colour, from MIN_COLOR_SHARE of the way (fainter is another colour: dim yellow is
    brown) to all of it.
    """
    offset = rgb - background
    best, best_distance = None, MAX_COLOR_DISTANCE
    for name, color in COLORS.items():
        direction = np.asarray(color) - background
        share = np.clip(offset @ direction / (direction @ direction), MIN_COLOR_SHARE, 1.0)
        distance = float(np.linalg.norm(offset - share * direction))
        if distance <= best_distance:
            best, best_distance = name, distance
    return best


def _detect_cell(cell: np.ndarray, background: np.ndarray, row: int, col: int, side: float) -> Detection | None:
    diff = cell - background  # (h, w, 3)
    distance = np.linalg.norm(diff, axis=-1)
    peak = np.percentile(distance, 99)
    if peak < MIN_CONTRAST:
        return None
    rgb = np.median(cell[distance >= 0.85 * peak], axis=0)  # the object's interior, not its anti-aliased rim
    direction = rgb - background
    if np.linalg.norm(direction) < MIN_CONTRAST / 2:  # the far pixels disagree (noise): no one colour to unmix
        return None
    alpha = np.clip(diff @ direction / (direction @ direction), 0.0, 1.0)
    alpha[alpha < 0.1] = 0.0  # background noise (JPEG ringing) would otherwise add area everywhere
    if alpha.sum() < MIN_AREA * side * side:
        return None
    shape, extent, misfit = _fit_shape(alpha, side)
    return Detection(
        shape=shape, color=_nearest_color(rgb, background), size="large" if extent > SIZE_THRESHOLD else "small",
        row=row, col=col, extent=extent, rgb=tuple(int(round(c)) for c in rgb), misfit=misfit,
    )


def detect(image: Image.Image | np.ndarray) -> list[Detection]:
    """The objects in a picture of the shapes data set (PIL image or (H, W, 3) uint8 array, any size), by cell."""
    pixels = _as_array(image)
    height, width = pixels.shape[:2]
    background = _background(pixels)
    side = math.sqrt(height * width)
    found = []
    for row in range(GRID):
        for col in range(GRID):
            rows = slice(row * height // GRID, (row + 1) * height // GRID)
            cell = pixels[rows, col * width // GRID: (col + 1) * width // GRID]
            detection = _detect_cell(cell, background, row, col, side)
            if detection is not None:
                found.append(detection)
    return found


_NOUN = rf"(?:a|an|one) ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})"
_ROWS = {word: row for row, words in enumerate(ROW_WORDS) for word in words}
_PLACE = rf"(?:in|at) the ({'|'.join(_ROWS)}) ({'|'.join(COL_WORDS)})(?: corner)?"
_RELATIONS = {words: name for name, words in RELATION_WORDS.items()}
_PLACE_CLAUSE = re.compile(rf"{_NOUN} {_PLACE}")
_RELATION_CLAUSE = re.compile(rf"{_NOUN} ({'|'.join(_RELATIONS)}) {_NOUN}")
_MAX_MENTIONS = GRID * GRID  # one object per cell: a caption naming more cannot describe a scene of the data set


def parse_caption(text: str) -> CaptionSpec | None:
    """The objects, places and relations a caption states; None if it is outside the grammar of `vltk.data.shapes`.

    Case, spacing, a full stop, spaces around commas (as a BPE decoder writes them), "an" / "one" for "a" and a
    trailing "corner" after a place are tolerated.
    """
    text = " ".join(text.lower().replace(",", " , ").split()).rstrip(" .")
    text = re.sub(r"^there (?:is|are) ", "", text)
    objects: list[Mention] = []
    places, relations = [], []
    for clause in re.split(r" , and | , | and ", text):
        if match := _PLACE_CLAUSE.fullmatch(clause):
            size, color, shape, row, col = match.groups()
            places.append((len(objects), _ROWS[row], COL_WORDS.index(col)))
            objects.append(Mention(shape, color, size))
        elif match := _RELATION_CLAUSE.fullmatch(clause):
            size_a, color_a, shape_a, relation, size_b, color_b, shape_b = match.groups()
            relations.append((len(objects), _RELATIONS[relation], len(objects) + 1))
            objects += [Mention(shape_a, color_a, size_a), Mention(shape_b, color_b, size_b)]
        else:
            return None
    if len(objects) > _MAX_MENTIONS:
        return None
    return CaptionSpec(tuple(objects), tuple(places), tuple(relations))


def check(caption: str, spec: CaptionSpec | None, objects: Sequence[Placed]) -> Verdict:
    """Score `spec` (parsed from `caption`) against `objects` (detections, or a scene's true objects)."""
    if spec is None:
        return Verdict(caption, False, 0, len(objects), False, 0.0, 0.0, 0.0, 0.0, False)
    n = len(spec.objects)
    best: tuple[int, list[bool], list[bool], list[bool], list[bool]] | None = None
    # Every injective map from mentions to detections (None = unmatched); at most 4 x 4 objects, so enumerate.
    for chosen in dict.fromkeys(itertools.permutations([*range(len(objects)), *[None] * n], n)):
        got = [objects[i] if i is not None else None for i in chosen]
        shape = [g is not None and g.shape == m.shape for m, g in zip(spec.objects, got)]
        color = [g is not None and g.color == m.color for m, g in zip(spec.objects, got)]
        size = [g is not None and g.size == m.size for m, g in zip(spec.objects, got)]
        facts = [got[i] is not None and (got[i].row, got[i].col) == (r, c) for i, r, c in spec.places]
        facts += [got[a] is not None and got[b] is not None and relation_holds(rel, got[a], got[b])
                  for a, rel, b in spec.relations]
        score = sum(shape) + sum(color) + sum(size) + sum(facts)
        if best is None or score > best[0]:
            best = (score, shape, color, size, facts)
    _, shape, color, size, facts = best
    count = n == len(objects)
    return Verdict(
        caption=caption, parsed=True, mentioned=n, found=len(objects), count=count,
        shape=sum(shape) / n, color=sum(color) / n, size=sum(size) / n,
        position=sum(facts) / len(facts) if facts else 1.0,
        correct=count and all(shape) and all(color) and all(size) and all(facts),
    )


def judge(image: Image.Image | np.ndarray, caption: str) -> Verdict:
    """Does `image` show exactly what `caption` says? An unparseable caption is judged wrong."""
    return check(caption, parse_caption(caption), detect(image))


def describe(objects: Sequence[Placed]) -> str:
    """What the judge read, in the captions' words: "2 objects: small blue square top left, large red blob bottom
    right". "blob" is a shape no outline fits and "unknown-colour" a colour far from every named one (both never match
    a caption)."""
    if not objects:
        return "no objects"
    names = [f"{o.size} {o.color or 'unknown-colour'} {o.shape or 'blob'} {ROW_WORDS[o.row][0]} {COL_WORDS[o.col]}"
             for o in objects]
    return f"{len(objects)} object{'s' if len(objects) > 1 else ''}: {', '.join(names)}"


def summarize(verdicts: Iterable[Verdict]) -> dict[str, float | int]:
    """Accuracies over verdicts: whole-caption, parse rate, object count, and per attribute / position."""
    verdicts = list(verdicts)
    n = len(verdicts)
    if n == 0:
        return {"captions": 0}
    mean = lambda field: sum(float(getattr(v, field)) for v in verdicts) / n  # noqa: E731
    return {"captions": n, "whole": mean("correct"), "parsed": mean("parsed"), "count": mean("count"),
            **{field: mean(field) for field in ("shape", "color", "size", "position")}}


class ReconstructionJudge:
    """The judge on pictures of the shapes data and on their reconstructions by an image tokenizer, caption by caption:
    how much of what a caption says survives tokenization.

        tally = ReconstructionJudge()
        tally.add(original, rebuilt, captions)     # (H, W, 3) uint8 pictures, the captions of the original
        tally.result()                             # {"originals": {...}, "reconstructions": {...}, "ratio": 0.97}
    """

    def __init__(self) -> None:
        self.originals: list[Verdict] = []
        self.reconstructions: list[Verdict] = []

    def add(self, original: np.ndarray, rebuilt: np.ndarray, captions: Sequence[str]) -> None:
        seen, rebuilt_seen = detect(original), detect(rebuilt)
        for caption in captions:
            spec = parse_caption(caption)
            self.originals.append(check(caption, spec, seen))
            self.reconstructions.append(check(caption, spec, rebuilt_seen))

    def result(self) -> dict[str, dict[str, float] | float | None] | None:
        """Rounded summaries of both and the ratio of their whole-caption accuracies; None when nothing was added."""
        if not self.originals:
            return None
        on_originals, on_recon = summarize(self.originals), summarize(self.reconstructions)
        return {"originals": {k: round(v, 4) for k, v in on_originals.items()},
                "reconstructions": {k: round(v, 4) for k, v in on_recon.items()},
                "ratio": round(on_recon["whole"] / on_originals["whole"], 4) if on_originals["whole"] else None}
