"""The released MAGVLT checkpoints' key map (vltk.models.official): a random state dict in the official layout, mapped,
gives vltk's MAGVLT the logits of a separate re-statement of the official forward (kakaobrain/magvlt
magvlt/models/stage2/transformers.py Transformer1d.forward, layers.py Block / MultiHeadSelfAttention / LMLayer,
maskgit.py `_get_input`, `_apply_mask`, `_get_mask`, `_get_i2t_attn_mask`, `get_logits_and_target_pair`,
`predict_length`): separate q / k / v, its mask, its positions, its special-token ids.

The parity runs at MAGVLT-base's width, heads, vocabularies and sequence (1024 wide, 8 heads, 16,384 + 49,408 tokens,
256 + 64 positions) with 2 of its 24 layers, to keep the CPU time small; MAGVLT-base and -large are checked whole by
their key / shape tables on the meta device.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from vltk.errors import VltkError
from vltk.models import magvlt
from vltk.models.magvlt import MAGVLT, Inputs, MAGVLTConfig
from vltk.models.official import official_config, official_shapes, to_vltk
from vltk.pipeline.import_magvlt import read_checkpoint
from vltk.train.checkpoint import layout_mismatch

# magvlt/models/utils.py SPECIAL_TOKENS_HNH, written out from the official code (not from vltk's constants).
BOI, BOT, BOC, BOG, MASK_IMG, MASK_TXT, BOG_LEFT, BOG_RIGHT, BOG_TOP, BOG_BOTTOM = range(10)
V_IMG, V_TXT, N, C = 16384, 49408, 256, 64  # configs/magvlt-it2it-base-sampling.yaml


def released(size: str, depth: int | None = None) -> MAGVLTConfig:
    extra = {"depth": depth} if depth else {}
    return MAGVLTConfig(size=size, image_vocab=V_IMG, text_vocab=V_TXT, image_tokens=N, text_tokens=C,
                        blind_prefix=False, **extra)


def random_official(cfg: MAGVLTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the official key layout; LayerNorm gains near 1, everything else N(0, 0.05)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(cfg).items():
        value = torch.randn(shape, generator=g) * 0.05
        state[key] = value + 1 if key.split(".")[-2] in ("ln1", "ln2", "ln") and key.endswith("weight") else value
    return state


# ---- the official forward, restated from kakaobrain/magvlt ------------------------------------------------------

def official_input(task: str, img: torch.Tensor, txt: torch.Tensor, bog: torch.Tensor):
    """maskgit.py `_get_input` (use_spc_pos): tokens, positions and the image / text / special locations."""
    b = img.shape[0]
    spc = lambda token: torch.full((b, 1), token)  # noqa: E731
    pos_img, pos_txt = torch.arange(N).repeat(b, 1), torch.arange(C).repeat(b, 1)
    prefix, infix = torch.tensor([[0, 1]]).repeat(b, 1), torch.tensor([[2, 3]]).repeat(b, 1)
    ones_i, ones_t, zeros2 = torch.ones(b, N, dtype=torch.bool), torch.ones(b, C, dtype=torch.bool), torch.zeros(b, 2)
    if task == "t2i":
        tok = torch.cat([spc(BOC), spc(BOT), txt, bog[:, None], spc(BOI), img], dim=1)
        pos = torch.cat([prefix, pos_txt, infix, pos_img], dim=1)
        loc_img = torch.cat([zeros2, ~ones_t, zeros2, ones_i], dim=1).bool()
        loc_txt = torch.cat([zeros2, ones_t, zeros2, ~ones_i], dim=1).bool()
        loc_spc = torch.cat([zeros2 + 1, ~ones_t, zeros2 + 1, ~ones_i], dim=1).bool()
    else:
        tok = torch.cat([spc(BOC), spc(BOI), img, bog[:, None], spc(BOT), txt], dim=1)
        pos = torch.cat([prefix, pos_img, infix, pos_txt], dim=1)
        loc_img = torch.cat([zeros2, ones_i, zeros2, ~ones_t], dim=1).bool()
        loc_txt = torch.cat([zeros2, ~ones_i, zeros2, ones_t], dim=1).bool()
        loc_spc = torch.cat([zeros2 + 1, ~ones_i, zeros2 + 1, ~ones_t], dim=1).bool()
    return tok, pos, loc_img, loc_txt, loc_spc


def official_attn_mask(task: str, loc_txt: torch.Tensor, n_seqs: torch.Tensor) -> torch.Tensor:
    """maskgit.py `_get_mask`: t2i blocks the text pads as rows and columns; i2t / it2it-mask
    (`_get_i2t_attn_mask`) blocks them as columns and BOT's row from BOT + 1 on."""
    b, length = loc_txt.shape
    offset = int(loc_txt[0].nonzero()[0])
    mask = torch.ones(b, length, length, dtype=torch.bool)
    for i, n in enumerate(n_seqs.tolist()):
        mask[i, :, offset + n: offset + C] = False
        if task == "t2i":
            mask[i, offset + n: offset + C, :] = False
    if task != "t2i":
        bot_idx = 2 + N + 1
        mask[:, bot_idx, bot_idx + 1:] = False
    return mask


def official_attention(sd, prefix: str, x: torch.Tensor, attn_mask: torch.Tensor, heads: int) -> torch.Tensor:
    """layers.py MultiHeadSelfAttention.forward (no cache, eval mode)."""
    b, t, c = x.shape
    x = x.transpose(0, 1).contiguous()  # (T, B, C)
    lin = lambda name, h: F.linear(h, sd[f"{prefix}{name}.weight"], sd[f"{prefix}{name}.bias"])  # noqa: E731
    k = lin("key", x).view(t, b * heads, c // heads).transpose(0, 1)  # (B*nh, T, hs)
    q = lin("query", x).view(t, b * heads, c // heads).transpose(0, 1)
    v = lin("value", x).view(t, b * heads, c // heads).transpose(0, 1)
    att = torch.bmm(q, k.transpose(-2, -1) * (1.0 / math.sqrt(k.size(-1))))
    attn_mask = attn_mask.clone()
    no_attn_ids = torch.logical_not(attn_mask.sum(dim=-1))
    attn_mask[torch.diag_embed(no_attn_ids)] = True  # at least one attention
    mask = torch.repeat_interleave(attn_mask, heads, dim=0)
    att = F.softmax(att.masked_fill(mask == 0, float("-inf")), dim=-1)
    y = torch.bmm(att, v).transpose(0, 1).contiguous().view(t, b, c)
    return lin("proj", y).transpose(0, 1).contiguous()


def layer_norm(sd, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"])


def official_forward(sd, tok, pos, loc_img, loc_txt, loc_spc, attn_mask, depth: int, heads: int) -> torch.Tensor:
    """transformers.py Transformer1d.forward: (B, L, D) hidden states (fp32; no autocast on the CPU)."""
    p = lambda key: sd["model." + key]  # noqa: E731
    b, length = tok.shape
    img_nonmask, txt_nonmask = loc_img & ~loc_spc, loc_txt & ~loc_spc
    x = torch.zeros(b, length, p("tok_emb.weight").shape[1])
    x[img_nonmask] += p("tok_emb.weight")[tok[img_nonmask]]
    x[txt_nonmask] += p("tok_emb.weight")[V_IMG + tok[txt_nonmask]]
    x[loc_spc] += p("tok_emb_spc.weight")[tok[loc_spc]]
    x[loc_img] += p("pos_emb_img.pos_embed")[pos[loc_img]]
    x[loc_txt] += p("pos_emb_txt.pos_embed")[pos[loc_txt]]
    x[loc_spc] += p("pos_emb_spc.pos_embed")[pos[loc_spc]]  # masked tokens are in loc_spc too: the quirk
    for i in range(depth):
        blk = f"model.blocks.{i}."
        x = x + official_attention(sd, blk + "attn.", layer_norm(sd, blk + "ln1", x), attn_mask, heads)
        h = F.gelu(F.linear(layer_norm(sd, blk + "ln2", x), sd[blk + "mlp.0.weight"], sd[blk + "mlp.0.bias"]))
        x = x + F.linear(h, sd[blk + "mlp.2.weight"], sd[blk + "mlp.2.bias"])
    return x


def official_logits(sd, x: torch.Tensor, loc_img, loc_txt):
    """transformers.py LMLayer and maskgit.py `get_logits_and_target_pair` (use_target_vocab_only), `predict_length`."""
    p = lambda key: sd["model." + key]  # noqa: E731
    h = F.gelu(F.linear(x, p("lm_layer.linear.weight"), p("lm_layer.linear.bias")))
    h = layer_norm(sd, "model.lm_layer.ln", h)
    logits = torch.matmul(h, p("tok_emb.weight").T) + p("lm_layer.output_bias")
    length = F.linear(x[:, 2 + N + 1], p("length_predictor.weight"))
    return logits[loc_img][:, :V_IMG], logits[loc_txt][:, V_IMG:], length


# ---- the tests --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_two_layers():
    cfg = released("base", depth=2)
    state = random_official(cfg)
    model = MAGVLT(official_config(state, image_vocab=V_IMG))
    model.load_state_dict(to_vltk(state, model.cfg))
    return state, model.eval()


@pytest.mark.parametrize("task", ["t2i", "i2t", "it2it"])
def test_mapped_logits_equal_the_official_forward(base_two_layers, task):
    state, model = base_two_layers
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randint(0, V_IMG, (2, N), generator=g), torch.randint(0, V_TXT, (2, C), generator=g)
    n_seqs = torch.tensor([7, 40])  # text lengths, EOS included
    image_masked = torch.rand(2, N, generator=g) < (0.5 if task != "i2t" else 0.0)
    text_masked = torch.rand(2, C, generator=g) < (0.0 if task == "t2i" else 0.6)
    text_masked &= torch.arange(C) < n_seqs[:, None]  # MAGVLT masks text within its length
    bog = torch.tensor([BOG, BOG_LEFT if task == "t2i" else BOG_TOP])  # MixSel's selectors, official ids
    layout = "t2i" if task == "t2i" else "i2t"

    tok, pos, loc_img, loc_txt, loc_spc = official_input(layout, img, txt, bog)
    loc_mask = torch.zeros_like(loc_img)
    loc_mask[loc_img], loc_mask[loc_txt] = image_masked.flatten(), text_masked.flatten()
    tok_masked = tok.clone()  # maskgit.py `_apply_mask`
    tok_masked[loc_mask & loc_img], tok_masked[loc_mask & loc_txt] = MASK_IMG, MASK_TXT
    attn_mask = official_attn_mask(layout, loc_txt, n_seqs)
    with torch.no_grad():
        hidden = official_forward(state, tok_masked, pos, loc_img, loc_txt, loc_spc | loc_mask, attn_mask, 2, 8)
        ref_img, ref_txt, ref_len = official_logits(state, hidden, loc_img, loc_txt)
        selector = torch.tensor([magvlt.BOG, magvlt.LEFT if task == "t2i" else magvlt.TOP])  # the same, vltk's ids
        out = model(Inputs(layout, img, image_masked, txt, text_masked, n_seqs, selector),
                    image_query=torch.ones(2, N, dtype=torch.bool), text_query=torch.ones(2, C, dtype=torch.bool),
                    length=layout == "i2t")
    errors = {"image": (out.image_logits - ref_img).abs().max().item(),
              "text": (out.text_logits - ref_txt).abs().max().item()}
    if layout == "i2t":
        errors["length"] = (out.length_logits - ref_len).abs().max().item()
    print(f"{task}: max |vltk - official| {errors}; logit scale {ref_img.abs().max().item():.2f}")
    assert max(errors.values()) < 1e-4, errors


def parameters(width: int, depth: int, specials: int = 10) -> int:
    """Transformer1d + length predictor at the released sizes, counted from the official modules: per block 4 D x D
    attention matrices and 2 MLP matrices of 4 D x D with biases (13 D) and two LayerNorms; the joint and special
    token tables; the image, text and special (4 + N + C) position tables; LMLayer (D x D + bias, LayerNorm, output
    bias over V); the length predictor (C x D, no bias)."""
    d, v = width, V_IMG + V_TXT
    return (depth * (12 * d * d + 13 * d) + (v + specials) * d + (N + C + 4 + N + C) * d
            + (d * d + 3 * d + v) + C * d)


@pytest.mark.parametrize("size,width,depth,heads,paper", [("base", 1024, 24, 8, 371e6), ("large", 1280, 36, 10, 840e6)])
def test_released_sizes_map_onto_vltk_whole(size, width, depth, heads, paper):
    """configs/magvlt-it2it-{base,large}-sampling.yaml, checked on the meta device (no memory, no time)."""
    with torch.device("meta"):
        state = {k: torch.empty(shape) for k, shape in official_shapes(released(size)).items()}
        state["model_vqvae.quantize.embedding.weight"] = torch.empty(V_IMG, 256)  # the VQ-GAN: not mapped
        cfg = official_config(state, image_vocab=V_IMG)
        model = MAGVLT(cfg)
        model.load_state_dict(to_vltk(state, cfg), strict=True, assign=True)
    assert (cfg.size, cfg.width, cfg.depth, cfg.heads) == (size, width, depth, heads)
    assert (cfg.text_vocab, cfg.image_tokens, cfg.text_tokens, cfg.mixsel_tokens) == (V_TXT, N, C, True)
    assert not cfg.blind_prefix and cfg.official_positions  # the official mask and position quirk
    assert len(state) - 1 == 11 + 16 * depth  # 11 tables and heads, 16 tensors per block
    count = sum(p.numel() for p in model.parameters())
    assert count == parameters(width, depth)
    # MAGVLT Tab. 8: 371M for base (here 371.53M); 840M for large, where its config gives 795.23M (unexplained).
    print(f"{size}: {count / 1e6:.2f}M parameters (paper: {paper / 1e6:.0f}M)")
    if size == "base":
        assert abs(count - paper) < 1e6


def test_special_tokens_keep_their_meaning(base_two_layers):
    state, model = base_two_layers
    official = state["model.tok_emb_spc.weight"]
    pairs = {BOI: magvlt.BOI, BOT: magvlt.BOT, BOC: magvlt.BOC, BOG: magvlt.BOG, MASK_IMG: magvlt.MASK_IMAGE,
             MASK_TXT: magvlt.MASK_TEXT, BOG_LEFT: magvlt.LEFT, BOG_RIGHT: magvlt.RIGHT, BOG_TOP: magvlt.TOP,
             BOG_BOTTOM: magvlt.BOTTOM}
    for row, vltk_id in pairs.items():
        assert torch.equal(model.specials.weight[vltk_id], official[row])


def test_fused_qkv_is_query_key_value_in_that_order(base_two_layers):
    state, model = base_two_layers
    qkv = model.transformer.blocks[1].attn.qkv
    for i, name in enumerate(("query", "key", "value")):
        assert torch.equal(qkv.weight[i * 1024:(i + 1) * 1024], state[f"model.blocks.1.attn.{name}.weight"])
        assert torch.equal(qkv.bias[i * 1024:(i + 1) * 1024], state[f"model.blocks.1.attn.{name}.bias"])
    assert model.head.bias is not None and torch.equal(model.head.bias, state["model.lm_layer.output_bias"])


def test_layout_problems_are_named():
    shapes = official_shapes(released("base", depth=1))
    got = dict(shapes)
    assert layout_mismatch(got, shapes) is None
    del got["model.blocks.0.attn.key.bias"]
    got["model.blocks.0.attn.qkv.weight"] = (3072, 1024)
    got["model.length_predictor.weight"] = (32, 1024)
    problem = layout_mismatch(got, shapes)
    assert problem == ("missing: model.blocks.0.attn.key.bias; unexpected: model.blocks.0.attn.qkv.weight; "
                       "wrong shape: model.length_predictor.weight (32, 1024) != (64, 1024)")
    with torch.device("meta"):
        state = {k: torch.empty(s) for k, s in shapes.items()}
        state["model.tok_emb.weight"] = torch.empty(V_IMG + V_TXT, 768)
    with pytest.raises(VltkError, match="width 768: the released MAGVLT configs have widths 1024, 1280"):
        official_config(state, image_vocab=V_IMG)


class Hyperparameters:  # stands for what Lightning pickles beside the weights (MaskGITModel's tokenizer)
    pass


def test_checkpoints_load_without_running_their_code(tmp_path):
    weights = {"model.tok_emb.weight": torch.zeros(3, 2)}
    plain = tmp_path / "state.pt"
    torch.save({"state_dict": weights, "epoch": 3}, plain)
    assert read_checkpoint(plain).keys() == weights.keys()
    torch.save(weights, plain)  # a bare state dict, as the re-save writes it
    assert read_checkpoint(plain).keys() == weights.keys()

    pickled = tmp_path / "magvlt-it2it-base.ckpt"
    torch.save({"state_dict": weights, "hyper_parameters": {"tokenizer": Hyperparameters()}}, pickled)
    with pytest.raises(VltkError) as err:
        read_checkpoint(pickled)
    message = str(err.value)
    assert "\n" not in message and "weights_only=False" in message and "on a machine you trust" in message
    snippet = message.split("with: ")[1].split(" and import")[0]
    assert snippet.startswith('python -c "') and "torch.save(ckpt.get('state_dict', ckpt)" in snippet
    resaved = tmp_path / "magvlt-it2it-base.state.pt"
    assert str(resaved) in snippet
    exec(snippet.removeprefix('python -c "').removesuffix('"'))  # the test's own file: trusted
    assert read_checkpoint(resaved).keys() == weights.keys()

    garbage = tmp_path / "garbage.ckpt"
    for junk in (b"not a checkpoint", pickle.dumps([1, 2], protocol=2) + b"not torch"):
        garbage.write_bytes(junk)
        with pytest.raises(VltkError, match="^cannot read MAGVLT checkpoint [^\n]*$"):
            read_checkpoint(garbage)
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, plain)
    with pytest.raises(VltkError, match="is not a MAGVLT checkpoint"):
        read_checkpoint(plain)
