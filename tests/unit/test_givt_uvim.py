"""GIVT's UViM stage II (GIVT §4.2, App. B, C.3; big_vision givt.py `EncoderDecoderBlock`): the encoder-decoder GIVT
with a ViT and cross-attention, continuous (GMM) and discrete (UViM's VQ baseline, code logits). KV-cache decoding
equals the teacher-forced forward, the image's keys / values are computed once and follow a reorder, beam search finds
likelier label latents than ancestral sampling, a GIVT without the options is what it was (parameters and outputs
fingerprinted at the commit before them), and the paper's size."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from vltk.config import config_to_dict, from_dict
from vltk.models.givt import GIVT, GIVTConfig
from vltk.models.gmm import GMM, GMMConfig, log_density
from vltk.models.layers import Transformer, TransformerConfig
from vltk.models.vit import ViTConfig
from vltk.objectives.givt import token_nll
from vltk.sampling.givt import GIVTSampling, sample_causal

L, D, V, B = 8, 4, 12, 3
GMM_CFG = GMMConfig(kind="diagonal", mixtures=2, channels=D)
VIT = ViTConfig(image_size=16, patch_size=8, width=24, depth=1, heads=2, mlp_width=48)  # narrower: a projection


def uvim(discrete: bool = False, encoder: ViTConfig = VIT, seed: int = 0) -> GIVT:
    """A tiny encoder-decoder GIVT in eval mode; the zero-initialised head is randomised."""
    cfg = GIVTConfig(width=32, depth=2, heads=2, mlp_width=64, dropout=0.0, attn_dropout=0.0, gmm=GMM_CFG,
                     image_tokens=L, label_dropout=0.0, encoder=encoder, codebook_size=V if discrete else 0)
    torch.manual_seed(seed)
    model = GIVT(cfg).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5 if discrete else 0.3)
    return model


def inputs(discrete: bool, b: int = B, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(V, (b, L), generator=g) if discrete else torch.randn(b, L, D, generator=g)
    return z, torch.rand(b, 3, 16, 16, generator=g) * 2 - 1


@torch.no_grad()
@pytest.mark.parametrize("discrete", [False, True])
def test_kv_cache_decoding_equals_the_teacher_forced_forward(discrete):
    model, (z, image) = uvim(discrete), inputs(discrete)
    full = model(z, image=image)  # (B, L, num_logits)
    assert full.shape == (B, L, V if discrete else GMM_CFG.num_logits)
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    cache = model.new_cache(batch=B)
    outputs = [model.prefill(cache, image=image)]
    for i in range(L - 1):
        outputs.append(model.step(cache, z[:, i:i + 1]))
    torch.testing.assert_close(torch.stack(outputs, dim=1), full, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1  # the ViT ran at the prefill only; the steps read its keys / values from the cache
    assert sorted(cache.memory) == [0, 1] and cache.memory[0][0].shape == (B, 2, VIT.patches, 16)


@torch.no_grad()
def test_the_image_matters_and_its_keys_values_follow_a_reorder():
    model, (z, image) = uvim(), inputs(False)
    full = model(z, image=image)
    assert not torch.allclose(model(z, image=image.flip(0))[0], full[0])
    cache = model.new_cache(batch=B)
    model.prefill(cache, image=image)
    model.step(cache, z[:, :2])
    cache.reorder(torch.tensor([2, 0, 2, 2]))  # beams grow and are re-gathered: the memory goes with its rows
    out = model.step(cache, z[[2, 0, 2, 2], 2:3])
    torch.testing.assert_close(out, full[[2, 0, 2, 2], 3], rtol=1e-5, atol=1e-5)


def test_equal_widths_need_no_projection_and_the_config_round_trips():
    model = uvim(encoder=dataclasses.replace(VIT, width=32))
    assert model.encoder_proj is None and uvim().encoder_proj.in_features == 24
    block = model.transformer.blocks[0]  # big_vision's CrossAttn and LayerNorm2: no biases, as the decoder's
    assert block.norm_cross.bias is None and block.cross.q.bias is None and block.cross.kv.bias is None
    assert from_dict(GIVTConfig, config_to_dict(model.cfg)) == model.cfg
    with pytest.raises(ValueError, match="causal"):
        GIVTConfig(variant="maskgit", encoder=VIT, label_dropout=0.0)
    with pytest.raises(ValueError, match="image is the condition"):
        GIVTConfig(encoder=VIT, num_classes=10, label_dropout=0.0)
    with pytest.raises(ValueError, match="causal variant and no adapter"):
        GIVTConfig(variant="maskgit", codebook_size=16)
    z, image = inputs(False)
    with pytest.raises(ValueError, match="pass image"):
        model(z)
    with pytest.raises(ValueError, match="cfg_weight"):
        sample_causal(model, GIVTSampling(cfg_weight=0.4), batch=B, image=image)


@torch.no_grad()
@pytest.mark.parametrize("discrete", [False, True])
def test_beam_search_finds_likelier_label_latents_than_ancestral_sampling(discrete):
    model, (_, image) = uvim(discrete), inputs(discrete, b=16, seed=2)
    cfg = GIVTSampling(temperature=1.0)

    def log_likelihood(z):  # (16,) sum over tokens of log p(z_i | z_<i, image) under the model
        raw = model(z, image=image)
        if discrete:
            return raw.log_softmax(-1).gather(-1, z.unsqueeze(-1)).sum((1, 2))
        return log_density(GMM.from_logits(raw, GMM_CFG), z).sum(1)

    g = torch.Generator().manual_seed(11)
    ancestral, _ = sample_causal(model, cfg, batch=16, image=image, generator=g)
    searched, _ = sample_causal(model, dataclasses.replace(cfg, beams=4, fans=8), batch=16, image=image, generator=g)
    assert searched.shape == ancestral.shape == ((16, L) if discrete else (16, L, D))
    assert searched.dtype == (torch.long if discrete else torch.float32)
    assert log_likelihood(searched).mean() > log_likelihood(ancestral).mean() + 1.0


@torch.no_grad()
@pytest.mark.parametrize("discrete", [False, True])
def test_token_nll_is_cross_entropy_for_codes_and_the_gmm_nll_for_soft_tokens(discrete):
    model, (z, image) = uvim(discrete), inputs(discrete)
    raw = model(z, image=image)
    per_token = token_nll(raw, z, model.cfg)
    assert per_token.shape == (B, L)
    expected = -(raw.log_softmax(-1).gather(-1, z.unsqueeze(-1))[..., 0] if discrete
                 else log_density(GMM.from_logits(raw, GMM_CFG), z))
    torch.testing.assert_close(per_token, expected, rtol=1e-5, atol=1e-5)


def _fingerprint(model: GIVT) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("text,digest,sums", [
    (False, "0991cf08370880ff", (7.863058, 8.24007, -0.635803, 1.702795)),
    (True, "bb731318d8622dcd", (26.391523, 26.696568, -0.242598, 0.898493)),
])
def test_without_the_options_a_givt_is_what_it_was(text, digest, sums):
    # Parameters (bit for bit) and outputs (train mode with its dropout draws, and eval) of a seeded GIVT, recorded at
    # the commit before the encoder / codebook options (0ef7705).
    cfg = GIVTConfig(width=32, depth=2, heads=2, mlp_width=64, dropout=0.1, attn_dropout=0.1, image_tokens=6,
                     num_classes=5, text_vocab=10 if text else 0, text_tokens=4 if text else 0,
                     gmm=GMMConfig(kind="diagonal", mixtures=3, channels=4))
    torch.manual_seed(0)
    model = GIVT(cfg)
    torch.nn.init.normal_(model.head.weight, std=0.3)
    assert _fingerprint(model) == digest
    assert model.encoder is None and model.encoder_proj is None
    assert all(block.cross is None and not hasattr(block, "norm_cross") for block in model.transformer.blocks)
    g = torch.Generator().manual_seed(1)
    z, labels = torch.randn(2, 6, 4, generator=g), torch.randint(5, (2,), generator=g)
    kw = dict(text=torch.randint(10, (2, 4), generator=g), text_len=torch.tensor([2, 4])) if text else {}
    torch.manual_seed(3)
    with torch.no_grad():
        train = model.train()(z, labels, **kw)
        evaluated = model.eval()(z, labels, **kw)
    got = (train.sum().item(), evaluated.sum().item(), evaluated[0, 1, 0].item(), evaluated[1, 5, 7].item())
    assert got == pytest.approx(sums, abs=1e-5)
    keys = Transformer(TransformerConfig(width=8, depth=1, heads=2)).state_dict().keys()
    assert not any("cross" in k for k in keys)


def test_paper_size():
    # App. C.3: ViT-L/16 at 512 px (1024 patches) and the 'default' causal decoder with cross-attention over 256
    # tokens of d = 32 (one Gaussian); built on the meta device, so nothing is allocated.
    cfg = GIVTConfig(size="default", image_tokens=256, gmm=GMMConfig(mixtures=1, channels=32), label_dropout=0.0,
                     encoder=ViTConfig(image_size=512, patch_size=16, width=1024, depth=24, heads=16, mlp_width=4096))
    with torch.device("meta"):
        model = GIVT(cfg)
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert model.encoder_proj is None
    # ViT-L/16: 24 blocks of 12,596,224, the patch conv, 1024 positions and the final norm. The decoder: GIVT's
    # 'default' self-attention trunk (302.2M), its 24 cross-attention sub-layers (100.7M: q, k, v, out and a LayerNorm
    # without bias, 4,195,328 each), the Dense, 256 positions, BOS / NOLABEL rows, the norm and a 65-logit head.
    assert (encoder, total - encoder, total) == (304_147_456, 403_216_449, 707_363_905)
