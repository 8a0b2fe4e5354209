"""GIVT's samplers (GIVT §3.4, §4.1): the MaskGIT mask counts, the KV-cache decoder against a full-forward reference
loop (with and without DB-CFG), variance scaling on a zero head, beam search against ancestral sampling, guidance
whose two passes agree, MaskGIT never re-masking a decoded position, and the invalid combinations."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vltk.models.givt import GIVT, GIVTConfig
from vltk.models.gmm import GMM, GMMConfig, log_density
from vltk.sampling.gmm import sample as sample_gmm
from vltk.sampling.dbcfg import sample_guided
from vltk.sampling.givt import GIVTSampling, _beam_search, maskgit_mask_counts, sample, sample_causal

L, D, CLASSES, VOCAB, C = 16, 4, 5, 10, 4
GMM_CFG = GMMConfig(kind="diagonal", mixtures=2, channels=D)


def tiny(variant: str = "causal", *, text: bool = False, classes: int = CLASSES, gmm: GMMConfig = GMM_CFG,
         head: str = "random", seed: int = 0) -> GIVT:
    """A tiny GIVT. head: "random" (outputs depend on the inputs), "zero" (every token N(0, I), as at init) or
    "bias" (zero weights, a random bias: every token follows one fixed GMM whatever the input)."""
    cfg = GIVTConfig(size="tiny", width=32, depth=2, heads=2, mlp_width=64, dropout=0.0, attn_dropout=0.0,
                     variant=variant, gmm=gmm, image_tokens=L, num_classes=classes,
                     text_vocab=VOCAB if text else 0, text_tokens=C if text else 0)
    torch.manual_seed(seed)
    model = GIVT(cfg).eval()
    if head == "random":
        torch.nn.init.normal_(model.head.weight, std=0.3)
    elif head == "bias":
        torch.nn.init.normal_(model.head.bias, std=0.5)
    return model


def condition(b: int, text: bool = False, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"labels": torch.randint(CLASSES, (b,), generator=g)}
    if text:
        out["text"] = torch.randint(VOCAB, (b, C), generator=g)
        out["text_len"] = torch.randint(0, C + 1, (b,), generator=g)
    return out


def test_maskgit_mask_counts_are_the_reference_list():
    assert maskgit_mask_counts(256, 16) == [254, 251, 244, 236, 225, 212, 197, 181, 162, 142, 120, 97, 74, 49, 25, 0]
    assert maskgit_mask_counts(16, 1) == [0]
    assert maskgit_mask_counts(4, 16)[-1] == 0 and maskgit_mask_counts(4, 16)[:3] == [3, 2, 1]  # at least one a step


@torch.no_grad()
@pytest.mark.parametrize("w", [0.0, 0.4])
def test_kv_cache_decoding_equals_a_full_forward_reference_loop(w):
    model, b = tiny(text=True), 3
    cond = condition(b, text=True)
    cfg = GIVTSampling(temperature=0.8, mixture_temperature=1.3, cfg_weight=w)
    z, stats = sample_causal(model, cfg, batch=b, generator=torch.Generator().manual_seed(7), **cond)

    # The reference: recompute the whole forward on the growing prefix (zeros after it) for every token.
    g, ref = torch.Generator().manual_seed(7), torch.zeros(b, L, D)
    for i in range(L):
        gmm = GMM.from_logits(model(ref, **cond)[:, i], GMM_CFG, scale_temperature=0.8, mixture_temperature=1.3)
        if w == 0:
            ref[:, i] = sample_gmm(gmm, g)[0]
        else:
            dropped = model(ref, **cond, drop=torch.ones(b, dtype=torch.bool))[:, i]
            gmm_u = GMM.from_logits(dropped, GMM_CFG, scale_temperature=0.8, mixture_temperature=1.3)
            ref[:, i] = sample_guided(gmm.logits, gmm.means, gmm.scales, gmm_u.means, gmm_u.scales, w, g)[0]
    assert z.shape == (b, L, D) and z.dtype == torch.float32
    torch.testing.assert_close(z, ref, rtol=1e-4, atol=1e-4)
    assert ("acceptance" in stats) == (w > 0)
    if w > 0:
        assert 0.0 < stats["acceptance"] <= 1.0


@torch.no_grad()
@pytest.mark.parametrize("variant", ["causal", "maskgit"])
def test_a_zero_head_gives_scaled_standard_normal_tokens(variant):
    # MaskGIT's confidence order keeps the likeliest draws first, which narrows the law: a huge choice temperature
    # makes the order uniform and the tokens exactly N(0, t^2 I).
    model, b = tiny(variant, head="zero"), 256
    draws = {t: sample(model, GIVTSampling(temperature=t, choice_temperature=1e6), batch=b,
                       generator=torch.Generator().manual_seed(3), **condition(b))[0] for t in (0.5, 1.0)}
    for t, z in draws.items():  # 256 * 16 * 4 draws of N(0, t^2)
        assert abs(z.mean().item()) < 0.03 * t and abs(z.std().item() / t - 1) < 0.03
    if variant == "causal":  # the zero head ignores its inputs: the same draws, each sigma halved
        torch.testing.assert_close(draws[0.5], 0.5 * draws[1.0])


@torch.no_grad()
def test_beam_search_with_one_beam_and_one_fan_is_ancestral_sampling():
    model, b = tiny(), 3
    cond = condition(b)
    ancestral, _ = sample_causal(model, GIVTSampling(), batch=b, generator=torch.Generator().manual_seed(5), **cond)
    condition_kw = dict(labels=cond["labels"], text=None, text_len=None)
    beam = _beam_search(model, GIVTSampling(), b, condition_kw, torch.Generator().manual_seed(5))
    torch.testing.assert_close(beam, ancestral, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_beam_search_finds_more_likely_sequences_than_ancestral_sampling():
    model, b = tiny(text=True), 8
    cond = condition(b, text=True)
    cfg = GIVTSampling(temperature=1.0)

    def log_likelihood(z):  # (B,) sum over tokens of log p(z_i | z_<i, c) under the model (t = 1)
        return log_density(GMM.from_logits(model(z, **cond), GMM_CFG), z).sum(1)

    g = torch.Generator().manual_seed(11)
    ancestral = log_likelihood(sample_causal(model, cfg, batch=b, generator=g, **cond)[0])
    beams = dataclasses.replace(cfg, beams=4, fans=4)
    searched = log_likelihood(sample_causal(model, beams, batch=b, generator=g, **cond)[0])
    assert searched.mean() > ancestral.mean()


@torch.no_grad()
@pytest.mark.parametrize("variant", ["causal", "maskgit"])
@pytest.mark.parametrize("kind", ["diagonal", "per_channel"])
def test_guidance_runs_with_text_for_both_variants(variant, kind):
    gmm = GMMConfig(kind=kind, mixtures=2, channels=D)
    model, b = tiny(variant, text=True, gmm=gmm), 3
    z, stats = sample(model, GIVTSampling(cfg_weight=0.4, steps=4), batch=b,
                      generator=torch.Generator().manual_seed(0), **condition(b, text=True))
    assert z.shape == (b, L, D) and torch.isfinite(z).all()
    assert 0.0 < stats["acceptance"] <= 1.0


@torch.no_grad()
@pytest.mark.parametrize("variant,kind", [("causal", "diagonal"), ("maskgit", "diagonal"), ("causal", "per_channel")])
def test_guidance_between_equal_passes_draws_the_conditional_distribution(variant, kind):
    # No classes and no text: the conditional pass sees BOS, the unconditional NOLABEL; equal rows make them equal,
    # so p_c^(1+w) p_u^(-w) = p_c and the reference's envelope is exact. A bias-only head: every token one fixed GMM.
    gmm_cfg = GMMConfig(kind=kind, mixtures=2, channels=D)
    model, b, t = tiny(variant, classes=0, gmm=gmm_cfg, head="bias"), 256, 0.9
    model.labels.weight.data[model.cfg.nolabel] = model.labels.weight.data[0]
    cfg = GIVTSampling(cfg_weight=2.0, temperature=t, steps=4, choice_temperature=1e6)  # a uniform MaskGIT order
    z, stats = sample(model, cfg, batch=b,
                      generator=torch.Generator().manual_seed(1))
    gmm = GMM.from_logits(model.head.bias, gmm_cfg, scale_temperature=t)
    if kind == "diagonal":  # (k,) weights, (k, d) means and scales -> (d, k) per channel
        pi, means, scales = gmm.logits.softmax(-1), gmm.means.T, gmm.scales.T
    else:  # (d, k) weights, (d, k, 1) means and scales
        pi, means, scales = gmm.logits.softmax(-1), gmm.means[..., 0], gmm.scales[..., 0]
    mean = (pi * means).sum(-1)  # (d,): the mixture's moments per channel
    std = ((pi * (scales.square() + means.square())).sum(-1) - mean.square()).sqrt()
    samples = z.reshape(-1, D)  # 4096 draws per channel
    torch.testing.assert_close(samples.mean(0), mean, rtol=0, atol=0.1 * std.max().item())
    torch.testing.assert_close(samples.std(0), std, rtol=0.05, atol=0)
    assert stats["acceptance"] > 0.9


@torch.no_grad()
@pytest.mark.parametrize("w", [0.0, 0.4])
def test_maskgit_never_changes_a_decoded_position(w):
    model, b, steps = tiny("maskgit", text=True), 3, 6
    states = []
    z, _ = sample(model, GIVTSampling(cfg_weight=w, steps=steps), batch=b, generator=torch.Generator().manual_seed(2),
                  on_step=lambda s, z, masked: states.append((z.clone(), masked.clone())), **condition(b, text=True))
    assert len(states) == steps
    counts = maskgit_mask_counts(L, steps)
    previous = torch.ones(b, L, dtype=torch.bool)
    for (zs, masked), count in zip(states, counts):
        assert (masked.sum(1) == count).all()
        assert not (masked & ~previous).any()  # a decoded position is never masked again
        assert not zs[masked].any()  # masked positions are zeroed
        torch.testing.assert_close(z[~masked], zs[~masked], rtol=0, atol=0)  # and keep their value to the end
        previous = masked
    assert not previous.any() and (z != 0).all()


@torch.no_grad()
def test_maskgit_decodes_the_most_likely_draws_first():
    # A zero head: every draw is N(0, I), its log-density falls with |z|^2. Without choice noise the 2 of 16
    # positions decoded at the first step are each row's likeliest draws (a chi^2_4 minimum, mean about 0.9),
    # the ones left to the last step are plain draws (mean 4).
    model, b, states = tiny("maskgit", head="zero"), 64, []
    z, _ = sample(model, GIVTSampling(temperature=1.0, steps=4, choice_temperature=0.0), batch=b,
                  generator=torch.Generator().manual_seed(4), on_step=lambda s, z, m: states.append(m.clone()),
                  **condition(b))
    assert maskgit_mask_counts(L, 4) == [14, 11, 6, 0]
    first, last = ~states[0], states[2]
    norms = z.square().sum(-1)  # (B, L)
    assert norms[first].mean() < 1.5 and norms[last].mean() > 3.0


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="DB-CFG"):
        GIVTSampling(beams=2, cfg_weight=0.4)
    with pytest.raises(ValueError, match="DB-CFG"):
        GIVTSampling(fans=4, cfg_weight=0.1)
    for bad in (dict(temperature=0.0), dict(mixture_temperature=-1.0), dict(cfg_weight=-0.1), dict(beams=0),
                dict(fans=0), dict(steps=0), dict(proposals=0), dict(choice_temperature=-1.0),
                dict(rand_top_k_temperature=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GIVTSampling(**bad)
    full = tiny(gmm=GMMConfig(kind="full", mixtures=1, channels=D), head="zero")
    with pytest.raises(ValueError, match="full-covariance"):
        sample(full, GIVTSampling(cfg_weight=0.4), batch=2, **condition(2))
    sample(full, GIVTSampling(), batch=2, **condition(2))  # unguided, the full kind samples
    with pytest.raises(ValueError, match="causal"):
        sample(tiny("maskgit"), GIVTSampling(beams=2), batch=2, **condition(2))
