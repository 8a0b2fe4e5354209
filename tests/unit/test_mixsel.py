"""MixSel's pixel-space mixing (MAGVLT §3.4): geometry against PIL's resize, directions 50/50, partners."""

import numpy as np
import pytest
import torch
from PIL import Image

from vltk.data.mixsel import draw_directions, draw_partners, mix

H, W = 16, 12


def _images(seed):
    """Two (1, 3, H, W) images in [-1, 1] from uint8 pixels, and those pixels."""
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(2)]
    tensors = [torch.from_numpy(p).permute(2, 0, 1)[None].float() / 127.5 - 1 for p in pixels]
    return tensors, pixels


def _pil_squash(pixels, width, height):
    """MAGVLT's HalfTransform squashes PIL images (torchvision Resize: bilinear, antialiased): the reference."""
    out = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    return out / 127.5 - 1


def _hwc(tensor):
    return tensor.permute(1, 2, 0).numpy()


def test_horizontal_mix_is_a_left_b_right_each_squashed_to_half_width():
    (a, b), (pa, pb) = _images(0)
    mixed = mix(a, b, torch.tensor([False]))[0]
    assert mixed.shape == (3, H, W)
    tolerance = 1.01 / 127.5  # PIL rounds to uint8: at most half a grey level, i.e. 0.5 / 127.5 in [-1, 1]
    np.testing.assert_allclose(_hwc(mixed[:, :, : W // 2]), _pil_squash(pa, W // 2, H), atol=tolerance)
    np.testing.assert_allclose(_hwc(mixed[:, :, W // 2 :]), _pil_squash(pb, W // 2, H), atol=tolerance)


def test_vertical_mix_is_a_top_b_bottom_each_squashed_to_half_height():
    (a, b), (pa, pb) = _images(1)
    mixed = mix(a, b, torch.tensor([True]))[0]
    tolerance = 1.01 / 127.5
    np.testing.assert_allclose(_hwc(mixed[:, : H // 2]), _pil_squash(pa, W, H // 2), atol=tolerance)
    np.testing.assert_allclose(_hwc(mixed[:, H // 2 :]), _pil_squash(pb, W, H // 2), atol=tolerance)


def test_constant_images_give_two_flat_halves_and_batches_mix_row_by_row():
    a = torch.full((2, 3, 7, 9), -0.5)
    b = torch.full((2, 3, 7, 9), 0.25)
    mixed = mix(a, b, torch.tensor([False, True]))
    # Odd sides: the first image gets floor(side / 2).
    a_value, b_value = torch.tensor(-0.5), torch.tensor(0.25)
    assert torch.allclose(mixed[0, :, :, :4], a_value) and torch.allclose(mixed[0, :, :, 4:], b_value)
    assert torch.allclose(mixed[1, :, :3], a_value) and torch.allclose(mixed[1, :, 3:], b_value)


def test_mix_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        mix(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 4), torch.tensor([False]))


def test_directions_are_fifty_fifty_and_seeded():
    draws = draw_directions(20_000, torch.Generator().manual_seed(0))
    # Binomial(20000, 1/2): the share's standard deviation is 0.0035; 0.015 is over 4 of them.
    assert abs(draws.float().mean().item() - 0.5) < 0.015
    again = draw_directions(20_000, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_partners_are_distinct_others_within_the_window_and_uniform():
    partners = draw_partners(window=6, pairs=3, generator=torch.Generator().manual_seed(0))
    assert partners.shape == (6, 3)
    for i, row in enumerate(partners.tolist()):
        assert i not in row and len(set(row)) == 3 and all(0 <= j < 6 for j in row)
    # More pairs than others in the window: every other image once.
    assert sorted(draw_partners(3, 5, torch.Generator().manual_seed(1))[0].tolist()) == [1, 2]
    assert draw_partners(1, 2, torch.Generator()).shape == (1, 0)
    # Uniform over the others: each of the 4 others of image 0 in a window of 5 is drawn 1/4 of the time.
    generator = torch.Generator().manual_seed(2)
    firsts = torch.cat([draw_partners(5, 1, generator)[0] for _ in range(4000)])
    shares = torch.bincount(firsts, minlength=5).float() / 4000
    assert shares[0] == 0 and torch.all((shares[1:] - 0.25).abs() < 0.03)
