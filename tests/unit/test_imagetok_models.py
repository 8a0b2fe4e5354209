"""The tokenizer models: CNN blocks against taming's definitions (taming's model.py), encode/decode shapes and dtypes
for f = 4, 8, 16, and the beta-VAE's KL, clipping and sampling against GIVT §3.1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vltk.config import from_dict
from vltk.errors import VltkError
from vltk.imagetok import (BetaVAE, CNNConfig, ImageTokenizerConfig, QuantizerConfig, VAEConfig, VQGAN,
                           build_image_tokenizer)
from vltk.imagetok.cnn import AttnBlock, Downsample, ResnetBlock
from vltk.imagetok.vae import gaussian_kl

MULTS = {4: (1, 2, 2), 8: (1, 1, 2, 2), 16: (1, 1, 2, 2, 4)}


def tiny(kind: str, f: int = 4, **vae) -> ImageTokenizerConfig:
    return ImageTokenizerConfig(
        kind=kind, image_size=32,
        encoder=CNNConfig(channels=8, channel_mult=MULTS[f], num_res_blocks=1, attn_resolutions=(32 // f,),
                          z_channels=8),
        quantizer=QuantizerConfig(codebook_size=32, code_dim=4, l2_norm=True),
        vae=VAEConfig(latent_channels=4, **vae),
    )


@pytest.mark.parametrize("f", [4, 8, 16])
def test_vqgan_encode_decode_shapes(f):
    torch.manual_seed(0)
    cfg = tiny("vqgan", f)
    model = build_image_tokenizer(cfg).eval()
    assert isinstance(model, VQGAN) and cfg.downsample == f and cfg.grid_size == 32 // f
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = model.encode(x)
    assert codes.shape == (2, 32 // f, 32 // f) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 32
    recon = model.decode(codes)
    assert recon.shape == (2, 3, 32, 32) and recon.dtype == torch.float32
    out = model(x)
    assert torch.allclose(out.recon, recon, atol=1e-4)  # forward = decode(encode) in eval mode (z + (e - z) ~ e)
    assert set(out.loss_terms) == {"vq"} and {"usage", "perplexity"} <= set(out.stats)
    assert model.codebook_usage(codes) == out.stats["usage"]
    assert model.last_layer is model.decoder.conv_out.weight


@pytest.mark.parametrize("f", [4, 8, 16])
def test_vae_encode_decode_shapes(f):
    torch.manual_seed(0)
    model = build_image_tokenizer(tiny("vae", f)).eval()
    assert isinstance(model, BetaVAE)
    mean, logvar = model.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert mean.shape == logvar.shape == (2, 4, 32 // f, 32 // f) and mean.dtype == torch.float32
    recon = model.decode(model.sample(mean, logvar, torch.Generator().manual_seed(0)))
    assert recon.shape == (2, 3, 32, 32) and recon.dtype == torch.float32


def test_gradients_reach_the_encoder_through_the_quantizer():
    torch.manual_seed(0)
    model = build_image_tokenizer(tiny("vqgan")).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = model(x)
    ((out.recon - x).abs().mean() + out.loss_terms["vq"]).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.grad.abs().sum() > 0


def test_kl_of_known_gaussians():
    zeros = torch.zeros(3, 4, 2, 2)
    assert gaussian_kl(zeros, zeros).item() == 0.0
    # mean 1, logvar 0: 1/2 per element, 16 elements per image
    assert gaussian_kl(torch.ones(3, 4, 2, 2), zeros).item() == pytest.approx(8.0)
    # mean 0, variance 2: 1/2 (2 - 1 - ln 2) per element
    assert gaussian_kl(zeros, torch.full((3, 4, 2, 2), math.log(2))).item() == pytest.approx(8 * (1 - math.log(2)))
    torch.manual_seed(0)
    mean, logvar = torch.randn(5, 4, 2, 2), torch.randn(5, 4, 2, 2)
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                                  torch.distributions.Normal(0.0, 1.0))
    assert gaussian_kl(mean, logvar).item() == pytest.approx(reference.sum((1, 2, 3)).mean().item(), rel=1e-5)


def test_vae_loss_term_is_beta_times_kl_and_eval_uses_the_mean():
    torch.manual_seed(0)
    model = build_image_tokenizer(tiny("vae", kl_weight=0.5))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, logvar = model.encode(x)
    out = model.train()(x)
    assert out.loss_terms["kl"].item() == pytest.approx(0.5 * gaussian_kl(mean, logvar).item(), rel=1e-5)
    model.eval()
    assert torch.equal(model(x).recon, model.decode(mean))


@pytest.mark.parametrize("bias, expected", [(100.0, 20.0), (-100.0, -30.0)])
def test_logvar_is_clipped(bias, expected):
    model = build_image_tokenizer(tiny("vae"))
    with torch.no_grad():
        model.quant_conv.weight.zero_()
        model.quant_conv.bias.fill_(bias)
    mean, logvar = model.encode(torch.zeros(1, 3, 32, 32))
    assert torch.all(logvar == expected) and torch.all(mean == bias)


def test_sample_is_the_reparametrisation():
    mean, logvar = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    z = BetaVAE.sample(mean, logvar, torch.Generator().manual_seed(7))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(z, mean + torch.exp(logvar / 2) * eps)


def test_vae_decode_clips_only_in_eval_mode():
    model = build_image_tokenizer(tiny("vae"))
    with torch.no_grad():
        model.decoder.conv_out.bias.fill_(5.0)
    z = torch.zeros(1, 4, 8, 8)
    assert model.train().decode(z).max() > 1
    assert model.eval().decode(z).max() == 1.0


def test_attention_block_is_taming_attention():
    torch.manual_seed(0)
    block = AttnBlock(8)
    x = torch.randn(2, 8, 3, 4)
    # taming's AttnBlock, written out: w = softmax(q^T k / sqrt(c)) over keys; out = v w^T; x + proj_out(out)
    h = block.norm(x)
    q, k, v = (conv(h).reshape(2, 8, 12) for conv in (block.q, block.k, block.v))
    w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * 8**-0.5, dim=2)  # (B, HW queries, HW keys)
    out = torch.bmm(v, w.permute(0, 2, 1)).reshape(2, 8, 3, 4)
    assert torch.allclose(block(x), x + block.proj(out), atol=1e-5)


def test_downsample_pads_right_and_bottom_only():
    down = Downsample(1)
    with torch.no_grad():
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 0, 0] = 1.0  # picks the kernel's top-left input
        down.conv.bias.zero_()
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert torch.equal(down(x), x[:, :, ::2, ::2])  # a symmetric pad would shift this by one pixel


def test_resnet_shortcut_projects_the_input():
    torch.manual_seed(0)
    block = ResnetBlock(8, 16, dropout=0.0)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()  # the residual branch is now zero
    x = torch.randn(2, 8, 4, 4)
    expected = F.conv2d(x, block.shortcut.weight, block.shortcut.bias)
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_attention_placement_follows_attn_resolutions():
    model = VQGAN(ImageTokenizerConfig(image_size=32, encoder=CNNConfig(
        channels=8, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), z_channels=8),
        quantizer=QuantizerConfig(codebook_size=8, code_dim=4)))
    assert [len(level.attn) for level in model.encoder.down] == [0, 2, 0]
    assert [len(level.attn) for level in model.decoder.up] == [0, 3, 0]
    assert not isinstance(model.encoder.mid.attn_1, AttnBlock)  # the 8 px middle is not listed
    with pytest.raises(ValueError, match="never occur"):
        ImageTokenizerConfig(image_size=32, encoder=CNNConfig(channel_mult=(1, 2), attn_resolutions=(8,)))


def test_config_from_toml_data():
    cfg = from_dict(ImageTokenizerConfig, {"kind": "vae", "image_size": 32,
                                           "encoder": {"channels": 32, "channel_mult": [1, 2, 2],
                                                       "attn_resolutions": []},
                                           "vae": {"latent_channels": 8}})
    assert cfg.encoder.channel_mult == (1, 2, 2) and cfg.grid_size == 8 and cfg.vae.latent_channels == 8
    with pytest.raises(VltkError, match="did you mean"):
        from_dict(ImageTokenizerConfig, {"encoder": {"channel": 32}})
    with pytest.raises(VltkError, match="legacy"):
        from_dict(ImageTokenizerConfig, {"quantizer": {"ema": True, "legacy": True}})


def test_group_norm_keeps_taming_groups_and_never_degenerates_to_instance_norm():
    from vltk.imagetok.cnn import group_norm

    assert [group_norm(c).num_groups for c in (128, 256, 512)] == [32, 32, 32]  # taming's Normalize
    assert [group_norm(c).num_groups for c in (16, 32, 64)] == [2, 4, 8]  # 8 channels per group
