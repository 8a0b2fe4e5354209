"""MixSel's mixed images (MAGVLT §3.4; magvlt `HalfTransform`): two images squashed into halves of one, in pixel space.

    directions = draw_directions(len(a), generator)            # (B,) bool: True = vertical (A top, B bottom)
    mixed = mix(a, b, directions)                              # (B, 3, H, W), then encoded like any image
    partners = draw_partners(window=8, pairs=1, generator=g)   # (8, 1): partner index of each image in its window

MAGVLT's `HalfTransform` resizes (squashes, never crops) each image to half width for a left/right mix or half height
for a top/bottom mix and concatenates the halves, so the mixed image holds both images whole at half resolution; the
tokenizer then encodes it like any other image. Splicing the token grids of two full images would be a different task
(the official code mixes pixels). Horizontal: A on the left, B on the right; vertical: A on top, B below. The selection
token a generator uses (LEFT/RIGHT or TOP/BOTTOM) follows from the direction and which of A and B is the target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HORIZONTAL = "horizontal"
VERTICAL = "vertical"


def squash(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, H, W) resized to (B, C, height, width), aspect ratio not kept (antialiased bilinear, as PIL does)."""
    return F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def mix(a: torch.Tensor, b: torch.Tensor, vertical: torch.Tensor) -> torch.Tensor:
    """Pixel-space mixes of image pairs: (B, C, H, W) x2 and (B,) bool -> (B, C, H, W).

    Row i is A squashed into the left half and B into the right half (`vertical[i]` False), or A into the top half and B
    into the bottom half (True). With an odd side the first image gets the smaller half (floor(side / 2)).
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"mix needs two (B, C, H, W) batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if vertical.shape != a.shape[:1]:
        raise ValueError(f"vertical must be ({a.shape[0]},), got {tuple(vertical.shape)}")
    height, width = a.shape[-2:]
    left = width // 2
    top = height // 2
    horizontal_mix = torch.cat([squash(a, height, left), squash(b, height, width - left)], dim=3)
    vertical_mix = torch.cat([squash(a, top, width), squash(b, height - top, width)], dim=2)
    return torch.where(vertical.view(-1, 1, 1, 1), vertical_mix, horizontal_mix)


def draw_directions(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count,) bool, each True (vertical) with probability 1/2."""
    return torch.rand(count, generator=generator) < 0.5


def draw_partners(window: int, pairs: int, generator: torch.Generator) -> torch.Tensor:
    """(window, min(pairs, window - 1)) partner indices: for each image of a window, distinct other images of it.

    Each row holds different indices, none equal to the row's own index, uniformly drawn; a window of one image has
    no partner (shape (1, 0)).
    """
    if window < 1 or pairs < 0:
        raise ValueError(f"need window >= 1 and pairs >= 0, got window={window}, pairs={pairs}")
    count = min(pairs, window - 1)
    # A random subset of the offsets 1..window-1 per row: row i's partners (i + offset) mod window are never i itself.
    offsets = torch.stack([torch.randperm(window - 1, generator=generator)[:count] + 1 for _ in range(window)])
    return (torch.arange(window).view(-1, 1) + offsets.view(window, count)) % window


def direction_name(vertical: bool) -> str:
    return VERTICAL if vertical else HORIZONTAL
