"""The label autoencoder: shapes, the zero-initialised head, the KL term by hand, UViM's panoptic prediction on
hand-made logits, and the VQ bottleneck."""

import dataclasses
import math

import torch

from vltk.imagetok.vae import gaussian_kl
from vltk.labeltok import LabelAutoencoder, LabelTokenizerConfig, panoptic_from_logits
from vltk.objectives.labeltok import reconstruction_loss

CFG = LabelTokenizerConfig(task="panoptic", image_size=16, patch_size=4, width=16, enc_depth=1, dec_depth=1, heads=2,
                           mlp_width=32, code_len=4, codeword_dim=3, num_classes=5, max_instances=6, codebook_size=8)


def labels(batch=2, size=16):
    g = torch.Generator().manual_seed(0)
    return torch.stack([torch.randint(0, 5, (batch, size, size), generator=g),
                        torch.randint(0, 6, (batch, size, size), generator=g)], dim=-1)


def test_shapes_and_zero_head_gives_uniform_logits():
    torch.manual_seed(0)
    model = LabelAutoencoder(CFG).eval()
    mu, logvar = model.encode(labels())
    assert mu.shape == logvar.shape == (2, 4, 3)
    logits = model.decode(mu)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"semantics": (2, 5, 16, 16), "instances": (2, 6, 16, 16)}
    assert all(torch.equal(v, torch.zeros_like(v)) for v in logits.values())
    losses = reconstruction_loss(logits, labels())  # uniform: log K per group
    assert math.isclose(losses["semantics"].item(), math.log(5), rel_tol=1e-6)
    assert math.isclose(losses["instances"].item(), math.log(6), rel_tol=1e-6)
    assert model.predict(logits).shape == (2, 16, 16, 2)


def test_depth_groups_and_prediction_in_metres():
    cfg = dataclasses.replace(CFG, task="depth", depth_bins=4, min_depth=1.0, max_depth=5.0)
    model = LabelAutoencoder(cfg).eval()
    logits = {"depth": torch.zeros(1, 4, 16, 16)}
    logits["depth"][0, 2] = 1.0  # bin 2 everywhere -> (2 + 0.5) / 4 * 4 + 1 = 3.5 m
    assert torch.allclose(model.predict(logits), torch.full((1, 16, 16), 3.5))
    assert model.encode(torch.zeros(1, 16, 16, 1, dtype=torch.long))[0].shape == (1, 4, 3)


def test_kl_by_hand_and_in_the_loss():
    # -1/2 (1 + logvar - mu^2 - exp(logvar)): mu 1, logvar 0 -> 0.5; mu 0, logvar ln 2 -> (1 - ln 2) / 2
    kl = gaussian_kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2)]]))
    assert math.isclose(kl.item(), 0.5 + (1 - math.log(2)) / 2, rel_tol=1e-6)
    model = LabelAutoencoder(CFG).eval()
    mu, logvar = model.encode(labels())
    out = model(labels())
    assert torch.allclose(out.loss_terms["kl"], CFG.beta * gaussian_kl(mu, logvar))


def test_panoptic_prediction_from_hand_made_logits():
    # One row of 4 pixels, 3 classes, 3 instance slots. Instances argmax: [1, 1, 2, 0].
    instances = torch.tensor([[0, 5, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]], dtype=torch.float).T[None, :, None]
    # Pixel 0 votes class 2 strongly, pixel 1 class 1 weakly: instance 1 is class 2 on both of its pixels.
    semantics = torch.tensor([[0, 0, 4], [0, 1, 0], [0, 3, 0], [2, 0, 0]], dtype=torch.float).T[None, :, None]
    pred = panoptic_from_logits(semantics, instances)
    assert pred.tolist() == [[[[2, 1], [2, 1], [1, 2], [0, 0]]]]


def test_vq_bottleneck_runs_and_embeds_codes():
    torch.manual_seed(0)
    model = LabelAutoencoder(dataclasses.replace(CFG, bottleneck="vq"))
    out = model(labels())  # training mode: quantised with EMA dictionary updates
    assert set(out.loss_terms) == {"vq"} and out.loss_terms["vq"].requires_grad
    model.eval()
    z, codes = model.encode(labels())
    assert codes.shape == (2, 4) and codes.dtype == torch.long and int(codes.max()) < 8
    assert torch.equal(model.embed_codes(codes), z)
    assert model.decode(z)["semantics"].shape == (2, 5, 16, 16)


def test_the_patch_embedding_is_the_conv_of_the_one_hot_labels():
    # big_vision proj/givt/vit.py `encode`: each channel one-hot over its classes, concatenated, a VALID conv with
    # kernel = stride = patch. vltk sums the conv's kernel columns instead; it must be the same function.
    for task in ("panoptic", "depth"):
        cfg = LabelTokenizerConfig(task=task, image_size=16, patch_size=4, width=32, enc_depth=1, dec_depth=1, heads=2,
                                   mlp_width=64, code_len=4, num_classes=5, max_instances=6, depth_bins=32)
        model = LabelAutoencoder(cfg)
        torch.nn.init.normal_(model.embedding.weight)
        torch.nn.init.normal_(model.embedding.bias)
        g = torch.Generator().manual_seed(0)
        labels = torch.stack([torch.randint(0, k, (3, 16, 16), generator=g) for k in cfg.groups.values()], dim=-1)
        one_hot = torch.cat([torch.nn.functional.one_hot(labels[..., i], k) for i, k in
                             enumerate(cfg.groups.values())], dim=-1).permute(0, 3, 1, 2).float()  # (B, K, H, W)
        conv = model.embedding(one_hot).flatten(2).transpose(1, 2)  # (B, 16, width), patches row-major
        torch.testing.assert_close(model.embed(labels), conv, atol=1e-5, rtol=1e-5)
