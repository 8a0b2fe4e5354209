"""GIVT (GIVT §3.2, App. B; big_vision givt.py): N(0, I) at init, causality and the KV cache, caption pads and CFG
dropping, MaskGIT's concat fusion, the training mask's ratios, and the paper's model sizes."""

from __future__ import annotations

import math

import pytest
import torch

from vltk.config import config_to_dict, from_dict
from vltk.errors import VltkError
from vltk.models.givt import GIVT, GIVTConfig, maskgit_mask
from vltk.models.gmm import GMM, GMMConfig, nll

L, D, CLASSES, VOCAB, C = 6, 4, 5, 10, 4
GMM_CFG = GMMConfig(kind="diagonal", mixtures=3, channels=D)


def tiny(variant: str = "causal", text: bool = True, seed: int = 0, random_head: bool = True) -> GIVT:
    """A tiny GIVT; the zero-initialised head is randomised so that outputs depend on the inputs."""
    cfg = GIVTConfig(width=32, depth=2, heads=2, mlp_width=64, dropout=0.0, attn_dropout=0.0, variant=variant,
                     gmm=GMM_CFG, image_tokens=L, num_classes=CLASSES, text_vocab=VOCAB if text else 0,
                     text_tokens=C if text else 0)
    torch.manual_seed(seed)
    model = GIVT(cfg).eval()
    if random_head:
        torch.nn.init.normal_(model.head.weight, std=0.3)
    return model


def batch(b: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"z": torch.randn(b, L, D, generator=g), "labels": torch.randint(CLASSES, (b,), generator=g),
            "text": torch.randint(VOCAB, (b, C), generator=g), "text_len": torch.tensor([2, C, 0, 1, 3][:b])}


def test_at_init_every_token_is_standard_normal():
    for variant in ("causal", "maskgit"):
        model = tiny(variant, random_head=False)
        x = batch()
        masked = torch.rand(3, L) < 0.5 if variant == "maskgit" else None
        raw = model(x["z"], x["labels"], x["text"], x["text_len"], masked=masked)
        assert raw.shape == (3, L, GMM_CFG.num_logits) and not raw.any()
        gmm = GMM.from_logits(raw, GMM_CFG)
        assert torch.all(gmm.logits.softmax(-1) == 1 / 3) and not gmm.means.any() and torch.all(gmm.scales == 1)
        expected = 0.5 * x["z"].square().sum(-1) + 0.5 * D * math.log(2 * math.pi)  # -log N(z; 0, I)
        torch.testing.assert_close(nll(gmm, x["z"]), expected)


@torch.no_grad()
def test_causal_output_i_depends_exactly_on_the_tokens_before_it():
    model, x = tiny(), batch()
    base = model(**x)
    for p in range(L):
        z = x["z"].clone()
        z[:, p] += 1.0
        changed = model(**{**x, "z": z})
        for q in range(L):
            assert torch.allclose(base[:, q], changed[:, q], atol=1e-6) == (q <= p), (p, q)


@torch.no_grad()
@pytest.mark.parametrize("text", [True, False])
def test_kv_cache_decoding_equals_the_full_forward(text):
    model, x = tiny(text=text), batch()
    condition = dict(labels=x["labels"], text=x["text"], text_len=x["text_len"]) if text else dict(labels=x["labels"])
    drop = torch.tensor([False, True, False])
    full = model(x["z"], **condition, drop=drop)
    cache = model.new_cache(batch=3)
    outputs = [model.prefill(cache, **condition, drop=drop)]
    for i in range(L - 1):
        outputs.append(model.step(cache, x["z"][:, i:i + 1]))
    torch.testing.assert_close(torch.stack(outputs, dim=1), full, rtol=1e-5, atol=1e-5)
    # Several tokens in one step (a longer block) give the last one's GMM; the cache is then full.
    cache = model.new_cache(batch=3)
    model.prefill(cache, **condition, drop=drop)
    torch.testing.assert_close(model.step(cache, x["z"][:, :L - 1]), full[:, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        model.step(cache, x["z"][:, :1])


@torch.no_grad()
def test_kv_cache_survives_a_reorder():
    model, x = tiny(), batch()
    full = model(**x)
    cache = model.new_cache(batch=3)
    model.prefill(cache, x["labels"], x["text"], x["text_len"])
    model.step(cache, x["z"][:, :2])
    cache.reorder(torch.tensor([2, 0]))  # beams 2 and 0 survive; their pad masks go with them
    torch.testing.assert_close(model.step(cache, x["z"][[2, 0], 2:3]), full[[2, 0], 3], rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("variant", ["causal", "maskgit"])
def test_caption_pads_are_never_read_and_a_dropped_condition_is_nolabel_without_text(variant):
    model, x = tiny(variant), batch()
    masked = maskgit_mask(3, L, torch.Generator().manual_seed(0)) if variant == "maskgit" else None
    base = model(**x, masked=masked)
    repadded = x["text"].clone()
    for b, n in enumerate(x["text_len"].tolist()):
        repadded[b, n:] = (repadded[b, n:] + 1) % VOCAB  # change every pad
    torch.testing.assert_close(model(**{**x, "text": repadded}, masked=masked), base, rtol=0, atol=0)
    retexted = x["text"].clone()
    retexted[0, 0] = (retexted[0, 0] + 1) % VOCAB  # a real token of caption 0 (text_len 2)
    assert not torch.allclose(model(**{**x, "text": retexted}, masked=masked)[0], base[0])

    drop = torch.ones(3, dtype=torch.bool)
    dropped = model(**x, drop=drop, masked=masked)
    nolabel = model(x["z"], torch.full((3,), CLASSES), x["text"], torch.zeros(3, dtype=torch.long), masked=masked)
    torch.testing.assert_close(dropped, nolabel, rtol=0, atol=0)
    other = model(x["z"], (x["labels"] + 1) % CLASSES, repadded.flip(0), x["text_len"], drop=drop, masked=masked)
    torch.testing.assert_close(other, dropped, rtol=0, atol=0)  # neither label nor caption is seen


@torch.no_grad()
def test_maskgit_concat_fusion_and_bidirectional_outputs():
    model, x = tiny("maskgit", text=False), batch()
    masked = torch.zeros(3, L, dtype=torch.bool)
    masked[:, 1] = masked[0, 4] = True
    table = model.labels.weight
    mask_row, nomask_row, replace_row = table[CLASSES + 1], table[CLASSES + 2], table[CLASSES + 3]
    fused = model._fuse(x["z"], masked)
    assert fused.shape == (3, L, 32)
    dense = model.embed_tokens(x["z"][0, 0])
    torch.testing.assert_close(fused[0, 0], torch.cat([nomask_row[::2], dense[::2]]))  # visible
    torch.testing.assert_close(fused[0, 1], torch.cat([mask_row[::2], replace_row[::2]]))  # masked
    base = model(x["z"], x["labels"], masked=masked)
    # A masked token's value is never read (NaN included); a visible one is read everywhere, earlier outputs too.
    hidden = x["z"].clone()
    hidden[:, 1] = float("nan")
    torch.testing.assert_close(model(hidden, x["labels"], masked=masked), base, rtol=0, atol=0)
    seen = x["z"].clone()
    seen[:, L - 1] += 1.0
    assert not torch.allclose(model(seen, x["labels"], masked=masked)[:, 0], base[:, 0])


def test_maskgit_mask_counts_and_ratios():
    b, n = 4000, 256
    mask = maskgit_mask(b, n, torch.Generator().manual_seed(3))
    counts = mask.sum(1)
    # The same draws by hand: u ~ U(0, 0.7), rho = cos(pi u / 2) (>= cos(0.35 pi) = 0.454), ceil(rho n) masked.
    u = torch.rand(b, generator=torch.Generator().manual_seed(3)).double() * 0.7
    expected = [math.ceil(math.cos(math.pi * v / 2) * n) for v in u.tolist()]
    assert counts.tolist() == expected
    assert counts.min() >= math.ceil(math.cos(0.35 * math.pi) * n) == 117 and counts.max() <= n
    assert counts.min() <= 120 and counts.max() == n  # both ends of the range are reached
    frequency = mask.float().mean(0)  # the positions are uniform: every position masked about equally often
    assert (frequency - frequency.mean()).abs().max() < 0.05


def test_training_lowers_the_nll_on_a_fixed_batch():
    model = tiny(random_head=False).train()
    x = batch(3, seed=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = nll(GMM.from_logits(model(**x), GMM_CFG), x["z"]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses


@pytest.mark.parametrize("size,params", [("base", 86e6), ("default", 304e6), ("large", 1.67e9)])
def test_paper_sizes(size, params):
    # GIVT Tab. 5 for class-conditional ImageNet 256 (L = 256, d = k = 16); built on the meta device (no memory).
    cfg = GIVTConfig(size=size, image_tokens=256, num_classes=1000, gmm=GMMConfig(mixtures=16, channels=16))
    with torch.device("meta"):
        model = GIVT(cfg)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.01)


def test_config_round_trips_through_a_manifest_dict():
    # train-gen records config_to_dict(cfg) in the manifest and load_generator rebuilds the model with from_dict.
    cfg = GIVTConfig(variant="maskgit", image_tokens=16, text_vocab=50, text_tokens=8,
                     gmm=GMMConfig(kind="full", mixtures=1, channels=8))
    assert from_dict(GIVTConfig, config_to_dict(cfg)) == cfg
    with pytest.raises(VltkError, match="gmm.kind"):
        from_dict(GIVTConfig, {"gmm": {"kind": "spherical"}})


def test_blocks_have_givts_switches():
    # big_vision givt.py: LayerNorms and self-attention without bias, the MLP with biases, a tanh GELU.
    block = tiny().transformer.blocks[0]
    assert block.norm1.bias is None and block.attn.qkv.bias is None and block.attn.proj.bias is None
    assert block.mlp.fc.bias is not None and block.mlp.fc.out_features == 64 and block.mlp.gelu == "tanh"


def test_size_presets_fill_only_the_unset_sizes_and_never_mutate():
    # GIVT Tab. 5 Base: width 768, depth 12, 12 heads, MLP 3072; a set field overrides its preset value.
    cfg = GIVTConfig(size="base", depth=2, image_tokens=4)
    assert (cfg.width, cfg.depth, cfg.heads, cfg.mlp_width) == (0, 2, 0, 0)  # as given: 0 = the preset's
    assert (cfg.trunk.width, cfg.trunk.depth, cfg.trunk.heads, cfg.trunk.hidden) == (768, 2, 12, 3072)
    sized = cfg.sized()
    assert (sized.width, sized.depth, sized.heads, sized.mlp_width) == (768, 2, 12, 3072)
    assert sized.sized() == sized and sized.trunk == cfg.trunk
    with torch.device("meta"):
        assert GIVT(cfg).cfg == sized  # a model records the sizes it was built with


def test_config_errors():
    with pytest.raises(ValueError, match="unknown model size"):
        GIVTConfig(size="huge")
    with pytest.raises(ValueError, match="text_vocab and text_tokens"):
        GIVTConfig(text_vocab=10)
    model, x = tiny(), batch()
    with pytest.raises(ValueError, match="labels"):
        model(x["z"], None, x["text"], x["text_len"])
    with pytest.raises(ValueError, match="masked"):
        model(**x, masked=torch.zeros(3, L, dtype=torch.bool))
    with pytest.raises(ValueError, match="prefill"):
        model.step(model.new_cache(batch=3), x["z"][:, :1])
    with pytest.raises(ValueError, match="KV cache"):
        tiny("maskgit").new_cache(batch=3)
