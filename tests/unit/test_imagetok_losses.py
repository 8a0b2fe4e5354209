"""Tokenizer losses against hand-computed values and taming's vqperceptual.py: pixel, GAN losses, the adaptive
weight, the GAN ramp, the PatchGAN's shapes, and LPIPS from a VGG16 state-dict file (random weights, saved to disk)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vltk.errors import VltkError
from vltk.imagetok.discriminator import PatchDiscriminator
from vltk.imagetok.losses import (Perceptual, adaptive_weight, build_perceptual, discriminator_loss, gan_factor,
                                  generator_loss, pixel_loss)

# torchvision's VGG16 "D" configuration: conv widths, "M" = max-pool (its own index in `features`, no weights)
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def random_vgg16_features(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format vgg16 `features.*` state dict with He-scaled random weights."""
    generator = torch.Generator().manual_seed(seed)
    state, index, width = {}, 0, 3
    for item in VGG16:
        if item == "M":
            index += 1
            continue
        he = (2 / (9 * width)) ** 0.5
        state[f"features.{index}.weight"] = torch.randn(item, width, 3, 3, generator=generator) * he
        state[f"features.{index}.bias"] = torch.zeros(item)
        index, width = index + 2, item  # conv, then ReLU
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    state = random_vgg16_features()
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def perceptual(vgg_file):
    return Perceptual(vgg_file[0])


def test_pixel_losses():
    x, y = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    y[0, 0, 0, 0] = -1.5
    assert pixel_loss(x, y, "l1").item() == pytest.approx((11 * 0.5 + 1.5) / 12)
    assert pixel_loss(x, y, "l2").item() == pytest.approx((11 * 0.25 + 2.25) / 12)


def test_gan_losses_hand_computed_and_against_bce():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # hinge D: 1/2 (mean(relu(1 - real)) + mean(relu(1 + fake))) = 1/2 (0.5 + 0.75); hinge G: -mean(fake)
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(0.625)
    assert generator_loss("hinge", fake).item() == pytest.approx(0.75)
    bce = F.binary_cross_entropy_with_logits
    d = 0.5 * (bce(real, torch.ones(2)) + bce(fake, torch.zeros(2)))
    assert discriminator_loss("vanilla", real, fake).item() == pytest.approx(d.item())
    assert generator_loss("vanilla", fake).item() == pytest.approx(bce(fake, torch.ones(2)).item())


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.zeros(4, requires_grad=True)
    a, b = torch.tensor([3.0, 4.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 6.0, 8.0])  # |a| = 5, |b| = 10
    weight = adaptive_weight((a * w).sum(), (b * w).sum(), w)
    assert weight.item() == pytest.approx(5 / (10 + 1e-4))
    assert not weight.requires_grad
    # a generator loss with no gradient at the last layer: 5 / 1e-4 = 5e4, clamped to 1e4 (or the given clamp)
    assert adaptive_weight((a * w).sum(), (0 * w).sum(), w).item() == pytest.approx(1e4)
    assert adaptive_weight((a * w).sum(), (0 * w).sum(), w, clamp=100.0).item() == pytest.approx(100.0)


def test_gan_factor_waits_then_ramps():
    assert [gan_factor(s, 10, 4) for s in (0, 9, 10, 11, 12, 14, 100)] == [0, 0, 0, 0.25, 0.5, 1, 1]
    assert [gan_factor(s, 5, 0) for s in (4, 5)] == [0, 1]


@pytest.mark.parametrize("size, n_layers, side", [(256, 3, 30), (32, 3, 2), (32, 2, 6)])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_discriminator_output_shape(size, n_layers, side, norm):
    disc = PatchDiscriminator(ndf=8, n_layers=n_layers, norm=norm)
    assert disc(torch.randn(2, 3, size, size)).shape == (2, 1, side, side)


def test_discriminator_layout_and_init():
    torch.manual_seed(0)
    disc = PatchDiscriminator()  # taming: ndf 64, 3 layers, BatchNorm
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in disc.modules()) == 3
    assert convs[3].weight.std().item() == pytest.approx(0.02, rel=0.02)  # 2M draws of N(0, 0.02)


def test_lpips_loads_the_given_backbone(vgg_file, perceptual):
    _, state = vgg_file
    assert torch.equal(perceptual.lpips.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(perceptual.lpips.net.slice5, "28").bias, state["features.28.bias"])
    assert not any(p.requires_grad for p in perceptual.parameters())
    assert not perceptual.train().training and not perceptual.lpips.lin0.training


def test_lpips_is_a_distance(perceptual):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(perceptual(x, x), torch.zeros(2), atol=1e-7)
    d = perceptual(x, y)
    assert d.shape == (2,) and torch.all(d > 0)
    assert torch.allclose(d, perceptual(y, x))
    y.requires_grad_()
    perceptual(x, y).sum().backward()  # the generator trains through it
    assert y.grad.abs().sum() > 0


def test_lpips_needs_a_vgg16_file(tmp_path):
    assert build_perceptual(None) is None
    with pytest.raises(VltkError, match="not found"):
        build_perceptual(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(VltkError, match="missing features.0.weight"):
        build_perceptual(wrong)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"not a torch file")
    with pytest.raises(VltkError, match="cannot read"):
        build_perceptual(truncated)
    shapes = tmp_path / "shapes.pth"
    torch.save({**random_vgg16_features(), "features.0.weight": torch.zeros(64, 3, 5, 5)}, shapes)
    with pytest.raises(VltkError, match="features.0.weight"):
        build_perceptual(shapes)
