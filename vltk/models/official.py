"""The released MAGVLT checkpoints (kakaobrain/magvlt: magvlt-it2it-base.ckpt, magvlt-it2it-large.ckpt) as a vltk
`MAGVLT`: a pure key map over state dicts.

    cfg = official_config(state, image_vocab=16384)         # sizes read off the tensors' shapes
    official_shapes(cfg)                                     # key -> shape of the official model.* keys
    MAGVLT(cfg).load_state_dict(to_vltk(state, cfg))         # strict

`state` is the checkpoint's `state_dict`: Lightning's of `MaskGITModel` (magvlt/models/maskgit/maskgit.py), whose
`model.*` is the `Transformer1d` (magvlt/models/stage2/transformers.py, layers.py, position_emb.py) with the length
predictor MaskGITModel attaches to it, and whose `model_vqvae.*` is the VQ-GAN (not mapped: vltk's image tokenizer is
taming's vqgan_imagenet_f16_16384, imported by `vltk tokenize image --from-taming`). D = width, V = image + text
vocabulary, N image tokens, C text tokens (configs/magvlt-it2it-{base,large}-sampling.yaml: D 1024 / 1280, 24 / 36
layers, 8 / 10 heads, V = 16,384 + 49,408, N = 256, C = 64):

    official (model.*)                       shape           vltk
    tok_emb.weight                           (V, D)          tokens.weight            image codes, then text ids
    tok_emb_spc.weight                       (10, D)         specials.weight          rows through SPECIALS (below)
    pos_emb_img.pos_embed                    (N, D)          pos_image
    pos_emb_txt.pos_embed                    (C, D)          pos_text
    pos_emb_spc.pos_embed                    (4 + N + C, D)  pos_special              official_positions: the quirk
    blocks.i.ln1 / ln2.{weight, bias}        (D,)            transformer.blocks.i.norm1 / norm2
    blocks.i.attn.{query, key, value}.weight 3 x (D, D)      transformer.blocks.i.attn.qkv.weight (3D, D): q; k; v
    blocks.i.attn.{query, key, value}.bias   3 x (D,)        transformer.blocks.i.attn.qkv.bias (3D,)
    blocks.i.attn.proj.{weight, bias}        (D, D), (D,)    transformer.blocks.i.attn.proj
    blocks.i.mlp.0.{weight, bias}            (4D, D), (4D,)  transformer.blocks.i.mlp.fc
    blocks.i.mlp.2.{weight, bias}            (D, 4D), (D,)   transformer.blocks.i.mlp.proj
    lm_layer.linear.{weight, bias}           (D, D), (D,)    head.dense
    lm_layer.ln.{weight, bias}               (D,)            head.norm
    lm_layer.output_bias                     (V,)            head.bias                logits tied to tokens.weight
    length_predictor.weight                  (C, D)          length_head.weight       reads BOT at 3 + N

The rest of the official forward is vltk's with `blind_prefix = false` (the official attention mask) and
`official_positions = true` (a masked token also adds special-position row k, k its index in its modality): the
blocks are the same pre-LN blocks (exact GELU, biases everywhere, no final LayerNorm), the head is the same MLM head
restricted to the target modality's vocabulary (`use_target_vocab_only`), and the layouts and structural positions
0..3 are `_get_input`'s. The number of heads leaves no trace in the weights: it is the released configs' per width.
"""

from __future__ import annotations

from typing import Mapping

import torch

from vltk.errors import VltkError
from vltk.models import magvlt
from vltk.models.layers import GeneratorConfig
from vltk.models.magvlt import BASIC_SPECIALS, MIXSEL_SPECIALS, MAGVLTConfig

PREFIX = "model."  # MaskGITModel.model: the Transformer1d
# The released configs by width: vltk's presets base (1024 wide, 24 layers, 8 heads) and large (1280, 36, 10) are
# configs/magvlt-it2it-base-sampling.yaml and -large- exactly.
SIZES: dict[int, str] = {GeneratorConfig.PRESETS[name][0]: name for name in ("base", "large")}
# The official special-token rows (magvlt/models/utils.py SPECIAL_TOKENS_HNH; SPECIAL_TOKENS_BASIC is its first six),
# each with the vltk id of the same token: vltk's specials.weight[vltk id] = tok_emb_spc.weight[official row].
SPECIALS: tuple[tuple[str, int], ...] = (
    ("BOI", magvlt.BOI), ("BOT", magvlt.BOT), ("BOC", magvlt.BOC), ("BOG", magvlt.BOG),
    ("MASK_IMG", magvlt.MASK_IMAGE), ("MASK_TXT", magvlt.MASK_TEXT),
    ("BOG_LEFT", magvlt.LEFT), ("BOG_RIGHT", magvlt.RIGHT), ("BOG_TOP", magvlt.TOP), ("BOG_BOTTOM", magvlt.BOTTOM),
)
_BLOCK = {  # official block key -> vltk block key, the fused q / k / v apart
    "ln1.weight": "norm1.weight", "ln1.bias": "norm1.bias", "ln2.weight": "norm2.weight", "ln2.bias": "norm2.bias",
    "attn.proj.weight": "attn.proj.weight", "attn.proj.bias": "attn.proj.bias",
    "mlp.0.weight": "mlp.fc.weight", "mlp.0.bias": "mlp.fc.bias", "mlp.2.weight": "mlp.proj.weight",
    "mlp.2.bias": "mlp.proj.bias",
}
_TOP = {  # official key -> vltk key, outside the blocks and the special-token table
    "tok_emb.weight": "tokens.weight", "pos_emb_img.pos_embed": "pos_image", "pos_emb_txt.pos_embed": "pos_text",
    "pos_emb_spc.pos_embed": "pos_special", "lm_layer.linear.weight": "head.dense.weight",
    "lm_layer.linear.bias": "head.dense.bias", "lm_layer.ln.weight": "head.norm.weight",
    "lm_layer.ln.bias": "head.norm.bias", "lm_layer.output_bias": "head.bias",
    "length_predictor.weight": "length_head.weight",
}
QKV = ("query", "key", "value")  # vltk's qkv rows: q, then k, then v (Attention.forward's view(b, t, 3, H, hd))

Shape = tuple[int, ...]


def official_config(state: Mapping[str, torch.Tensor], image_vocab: int) -> MAGVLTConfig:
    """The vltk config of an official `state` (its `model.*` keys): sizes from the shapes, heads from the released
    configs of that width, the text vocabulary = the joint table's rows - `image_vocab` (the split is not in the
    weights). Dropouts are the configs' (resid / attn 0.1), for fine-tuning; sampling runs in eval mode."""
    try:
        rows, width = state[PREFIX + "tok_emb.weight"].shape
        depth = 1 + max(int(k[len(PREFIX + "blocks."):].split(".")[0]) for k in state
                        if k.startswith(PREFIX + "blocks."))
        image_tokens = state[PREFIX + "pos_emb_img.pos_embed"].shape[0]
        text_tokens = state[PREFIX + "pos_emb_txt.pos_embed"].shape[0]
        specials = state[PREFIX + "tok_emb_spc.weight"].shape[0]
    except (KeyError, ValueError) as err:  # a missing table, or no block at all
        raise VltkError(f"not a MAGVLT state dict: no {PREFIX}tok_emb / blocks / position tables ({err})") from None
    if width not in SIZES:
        raise VltkError(f"width {width}: the released MAGVLT configs have widths {', '.join(map(str, SIZES))} "
                        "(the number of heads is not in the weights)")
    if specials not in (BASIC_SPECIALS, MIXSEL_SPECIALS):
        raise VltkError(f"{specials} special tokens; MAGVLT has {BASIC_SPECIALS} or {MIXSEL_SPECIALS} (with MixSel)")
    if not 0 < image_vocab < rows:
        raise VltkError(f"image vocabulary {image_vocab} does not fit the joint token table's {rows} rows")
    return MAGVLTConfig(size=SIZES[width], depth=depth, image_vocab=image_vocab, text_vocab=rows - image_vocab,
                        image_tokens=image_tokens, text_tokens=text_tokens, official_positions=True,
                        mixsel_tokens=specials == MIXSEL_SPECIALS, blind_prefix=False).sized()


def official_shapes(cfg: MAGVLTConfig) -> dict[str, Shape]:
    """Key -> shape of the official `model.*` state dict of a model of `cfg` (the table in the module docstring)."""
    cfg = cfg.sized()
    d, n, c, v = cfg.width, cfg.image_tokens, cfg.text_tokens, cfg.image_vocab + cfg.text_vocab
    shapes: dict[str, Shape] = {
        "tok_emb.weight": (v, d), "tok_emb_spc.weight": (MIXSEL_SPECIALS if cfg.mixsel_tokens else BASIC_SPECIALS, d),
        "pos_emb_img.pos_embed": (n, d), "pos_emb_txt.pos_embed": (c, d), "pos_emb_spc.pos_embed": (4 + n + c, d),
        "lm_layer.linear.weight": (d, d), "lm_layer.linear.bias": (d,), "lm_layer.ln.weight": (d,),
        "lm_layer.ln.bias": (d,), "lm_layer.output_bias": (v,), "length_predictor.weight": (c, d),
    }
    block = {"ln1.weight": (d,), "ln1.bias": (d,), "ln2.weight": (d,), "ln2.bias": (d,),
             **{f"attn.{name}.weight": (d, d) for name in (*QKV, "proj")},
             **{f"attn.{name}.bias": (d,) for name in (*QKV, "proj")},
             "mlp.0.weight": (4 * d, d), "mlp.0.bias": (4 * d,), "mlp.2.weight": (d, 4 * d), "mlp.2.bias": (d,)}
    shapes |= {f"blocks.{i}.{key}": shape for i in range(cfg.depth) for key, shape in block.items()}
    return {PREFIX + key: shape for key, shape in shapes.items()}


def to_vltk(state: Mapping[str, torch.Tensor], cfg: MAGVLTConfig) -> dict[str, torch.Tensor]:
    """The vltk `MAGVLT(cfg)` state dict of an official `state` of the layout `official_shapes(cfg)`, in float32
    (vltk's weights; a half-precision file is widened, never rounded)."""
    def get(key: str) -> torch.Tensor:
        return state[PREFIX + key].float()

    cfg = cfg.sized()
    out = {vltk: get(official) for official, vltk in _TOP.items()}
    table = get("tok_emb_spc.weight")  # (6 or 10, D), official row order
    out["specials.weight"] = torch.empty_like(table)
    out["specials.weight"][[vltk_id for _, vltk_id in SPECIALS[: len(table)]]] = table
    for i in range(cfg.depth):
        block, fused = f"blocks.{i}.", f"transformer.blocks.{i}."
        out |= {fused + vltk: get(block + official) for official, vltk in _BLOCK.items()}
        for part in ("weight", "bias"):  # (3D, D) / (3D,): the q, k and v projections stacked in that order
            out[f"{fused}attn.qkv.{part}"] = torch.cat([get(f"{block}attn.{name}.{part}") for name in QKV])
    return {k: v.contiguous() for k, v in out.items()}
