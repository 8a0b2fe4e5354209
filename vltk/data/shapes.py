"""The built-in data set's scenes: coloured shapes on a 2x2 grid, a sampler, an anti-aliased renderer and a caption
writer whose small grammar `vltk.metrics.judge.parse_caption` reads back.

    rng = random.Random(0)
    scene = sample_scene(rng, min_objects=1, max_objects=2)
    image = render(scene, size=32)                 # PIL RGB image, 32x32
    masks(scene, size=32)                          # (objects, 32, 32) bool: each object's pixels
    write_captions(scene, rng, k=4)                # ['a small red circle above a large blue square', ...]

A scene holds one to three objects, at most one per grid cell, each with a shape, a colour and a size (small / large),
jittered a little inside its cell but never leaving it: that keeps the judge exact. Every caption names every object
(size, colour, shape) exactly once and places each one by a cell ("in the top left") or by a relation to another object
("above", "below", "to the left of", "to the right of"), so it fixes the attributes and the object count.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Protocol, Sequence

import numpy as np
from PIL import Image, ImageDraw

GRID = 2  # cells per side; the judge segments the image by cell
# No fourth shape: a 7 px diamond differs from a circle of the same area by less than JPEG q75 changes a render.
SHAPES = ("circle", "square", "triangle")
# Named colours far apart in RGB (pairwise distance >= 110) on a dark background. Each is also >= 70 brighter than
# the background: JPEG and tokenizers keep luminance edges sharp but blur colour (yellow on white loses its shape).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "yellow": (240, 220, 50),
    "green": (40, 180, 70),
    "cyan": (40, 210, 220),
    "blue": (50, 100, 245),
    "purple": (170, 70, 210),
}
BACKGROUND = (25, 25, 25)
# Bounding-box side of each size, as a fraction of the image side (a cell is 0.5): 7 px and 12.8 px at 32 px.
SIZES: dict[str, float] = {"small": 0.22, "large": 0.40}
SCALE_JITTER = 0.05  # relative
POSITION_JITTER = 0.025  # fraction of the image side; with the largest extent a shape stays 0.015 inside its cell
ROW_WORDS = (("top", "upper"), ("bottom", "lower"))  # synonyms, indexed by row
COL_WORDS = ("left", "right")
RELATIONS = ("above", "below", "left", "right")
RELATION_WORDS = {"above": "above", "below": "below", "left": "to the left of", "right": "to the right of"}
_CIRCLE_VERTICES = 64


def outline(shape: str) -> tuple[tuple[float, float], ...]:
    """The shape's convex outline in a unit box centred on 0 (x right, y down), counter-clockwise on screen.

    The renderer draws these polygons and the judge fits them back, so a shape's geometry is defined once, here.
    """
    if shape == "circle":
        return tuple(
            (0.5 * math.cos(-2 * math.pi * i / _CIRCLE_VERTICES), 0.5 * math.sin(-2 * math.pi * i / _CIRCLE_VERTICES))
            for i in range(_CIRCLE_VERTICES)
        )
    if shape == "square":
        return ((-0.5, -0.5), (-0.5, 0.5), (0.5, 0.5), (0.5, -0.5))
    if shape == "triangle":  # apex up, base at the bottom
        return ((0.0, -0.5), (-0.5, 0.5), (0.5, 0.5))
    raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int
    x: float  # bounding-box centre, as a fraction of the image width
    y: float
    extent: float  # bounding-box side, as a fraction of the image side

    def attributes(self) -> dict[str, str | int]:
        """What captions.jsonl records (and what the judge checks): no jitter."""
        return {"shape": self.shape, "color": self.color, "size": self.size, "row": self.row, "col": self.col}


Scene = tuple[SceneObject, ...]


def parse_pairs(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """["red triangle", ...] -> (("red", "triangle"), ...); a ValueError names any word outside the vocabulary."""
    pairs = []
    for name in names:
        words = name.split()
        if len(words) != 2 or words[0] not in COLORS or words[1] not in SHAPES:
            raise ValueError(
                f"held-out combination {name!r} must be 'colour shape' with colour in {', '.join(COLORS)} "
                f"and shape in {', '.join(SHAPES)}"
            )
        pairs.append((words[0], words[1]))
    return tuple(pairs)


def sample_scene(
    rng: random.Random,
    *,
    min_objects: int,
    max_objects: int,
    avoid: Sequence[tuple[str, str]] = (),
    require: Sequence[tuple[str, str]] = (),
) -> Scene:
    """A random scene; no object is an `avoid` (colour, shape) pair, and one object is a `require` pair if given."""
    count = rng.randint(min_objects, max_objects)
    cells = sorted(rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], count))
    forced = rng.randrange(count) if require else -1
    objects = []
    for i, (row, col) in enumerate(cells):
        if i == forced:
            color, shape = rng.choice(list(require))
        else:
            while (pair := (rng.choice(list(COLORS)), rng.choice(SHAPES))) in avoid:
                pass  # rejection keeps the other combinations uniform
            color, shape = pair
        size = rng.choice(list(SIZES))
        extent = SIZES[size] * (1 + rng.uniform(-SCALE_JITTER, SCALE_JITTER))
        x = (col + 0.5) / GRID + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        y = (row + 0.5) / GRID + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        objects.append(SceneObject(shape, color, size, row, col, x, y, extent))
    return tuple(objects)


def render(scene: Scene, size: int, supersample: int = 4) -> Image.Image:
    """The scene as a `size` x `size` RGB image, drawn `supersample` times larger and box-filtered down."""
    big = size * supersample
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene:
        draw.polygon(_polygon(obj, big), fill=COLORS[obj.color])
    return image.resize((size, size), Image.Resampling.BOX)


def masks(scene: Scene, size: int, supersample: int = 4) -> np.ndarray:
    """(N, size, size) bool: pixel (i, j) is object n's when its polygon, drawn as `render` draws it, covers more than
    half of the pixel's `supersample`^2 samples. Objects never share a cell, so at most one mask holds a pixel."""
    big = size * supersample
    out = np.zeros((len(scene), size, size), dtype=bool)
    for n, obj in enumerate(scene):
        canvas = Image.new("1", (big, big), 0)
        ImageDraw.Draw(canvas).polygon(_polygon(obj, big), fill=1)
        covered = np.asarray(canvas).reshape(size, supersample, size, supersample).mean(axis=(1, 3))
        out[n] = covered > 0.5
    return out


def _polygon(obj: SceneObject, big: int) -> list[tuple[float, float]]:
    """The object's outline in the pixels of a `big`-side canvas."""
    return [((obj.x + u * obj.extent) * big, (obj.y + v * obj.extent) * big) for u, v in outline(obj.shape)]


class Located(Protocol):
    row: int
    col: int


def relation_holds(relation: str, a: Located, b: Located) -> bool:
    """'above': a's row is above b's; 'left': a's column is left of b's (a diagonal pair has two relations)."""
    return {"above": a.row < b.row, "below": a.row > b.row, "left": a.col < b.col, "right": a.col > b.col}[relation]


def relations_between(a: Located, b: Located) -> list[str]:
    return [name for name in RELATIONS if relation_holds(name, a, b)]


def _noun(obj: SceneObject) -> str:
    return f"a {obj.size} {obj.color} {obj.shape}"


def _place(obj: SceneObject, rng: random.Random) -> str:
    return f"{rng.choice(('in', 'at'))} the {rng.choice(ROW_WORDS[obj.row])} {COL_WORDS[obj.col]}"


def random_caption(scene: Scene, rng: random.Random) -> str:
    """One caption: objects in random order, each placed by its cell, or two of them by a relation that holds."""
    order = rng.sample(scene, len(scene))
    clauses = []
    if len(order) >= 2 and rng.random() < 0.5:
        a, b = order[0], order[1]
        clauses.append(f"{_noun(a)} {RELATION_WORDS[rng.choice(relations_between(a, b))]} {_noun(b)}")
        order = order[2:]
    clauses += [f"{_noun(obj)} {_place(obj, rng)}" for obj in order]
    rng.shuffle(clauses)
    text = clauses[0] if len(clauses) == 1 else f"{', '.join(clauses[:-1])} and {clauses[-1]}"
    return f"there is {text}" if rng.random() < 0.5 else text


def write_captions(scene: Scene, rng: random.Random, k: int) -> list[str]:
    """`k` distinct paraphrases of the scene (fewer only if the grammar has fewer; a one-object scene has 8)."""
    captions: list[str] = []
    for _ in range(20 * k):
        caption = random_caption(scene, rng)
        if caption not in captions:
            captions.append(caption)
            if len(captions) == k:
                break
    return captions
