"""timm-format ViT weights (a `.safetensors` state dict of timm's `VisionTransformer`) into vltk's `ViT`: the
pre-trained image encoder of GIVT's UViM models (configs/proj/givt/givt_nyu_depth.py, givt_coco_panoptic.py: ViT-L/16
at 512 px, initialised from big_vision's 'howto-i21k-L/16', whose timm conversion is this layout).

    load_timm_vit(vit, Path("vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors"))   # in place, strict

A pure key map plus one position-table resize (E = width, P = patches of the checkpoint):

    timm                                   shape             vltk ViT
    patch_embed.proj.{weight, bias}        (E, 3, p, p), (E,) patch_embed
    pos_embed                              (1, [1 +] P, E)   positions (P', E): the class-token row dropped, the grid
                                                             resized bilinearly when P != P' (below)
    blocks.i.norm1 / norm2.{weight, bias}  (E,)              transformer.blocks.i.norm1 / norm2
    blocks.i.attn.qkv.{weight, bias}       (3E, E), (3E,)    transformer.blocks.i.attn.qkv (the same q; k; v order)
    blocks.i.attn.proj.{weight, bias}      (E, E), (E,)      transformer.blocks.i.attn.proj
    blocks.i.mlp.fc1 / fc2.{weight, bias}                    transformer.blocks.i.mlp.fc / proj
    norm.{weight, bias}                    (E,)              norm
    cls_token, head.*                                        dropped (the decoder reads every patch)

Any other key (LayerScale gammas, register tokens, ...) is refused: vltk's ViT has no place for it, and dropping it
would change the function. The resize is big_vision's `vit.resample_posemb` (scipy.ndimage.zoom, order 1, whose
sample grid puts the corners on the corners: torch's bilinear with align_corners=True), for a checkpoint trained at
another resolution (224 or 384 px) used at 512 px.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from vltk.errors import VltkError
from vltk.models.vit import ViT, ViTConfig

DROPPED = ("cls_token", "head.")
BLOCK_KEYS = {"norm1": "norm1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "norm2",
              "mlp.fc1": "mlp.fc", "mlp.fc2": "mlp.proj"}


def resample_positions(table: torch.Tensor, grid: int) -> torch.Tensor:
    """(g * g, E) row-major positions -> (grid * grid, E), bilinear with corners aligned (big_vision's order-1 zoom)."""
    old = math.isqrt(table.shape[0])
    if old == grid:
        return table
    image = table.T.reshape(1, -1, old, old).float()  # (1, E, g, g)
    image = F.interpolate(image, size=(grid, grid), mode="bilinear", align_corners=True)
    return image.reshape(-1, grid * grid).T.to(table.dtype)


def _patch_positions(pos_embed: torch.Tensor) -> torch.Tensor:
    """timm's (1, [1 +] P, E) pos_embed -> (P, E): the class-token row (when there is one) dropped."""
    rows = pos_embed.shape[1]
    for prefix in (0, 1):
        if math.isqrt(rows - prefix) ** 2 == rows - prefix:
            return pos_embed[0, prefix:]
    raise ValueError(f"pos_embed has {rows} rows: neither a square grid nor one class token plus one")


def timm_to_vltk(state: Mapping[str, torch.Tensor], cfg: ViTConfig) -> dict[str, torch.Tensor]:
    """A timm ViT state dict -> vltk `ViT` keys (the table above). Raises KeyError for a missing key and ValueError
    for an unmapped one or an impossible position table; shapes are checked by `load_timm_vit`."""
    out, used = {}, set()

    def take(src: str, dst: str) -> None:
        out[dst] = state[src]
        used.add(src)

    for name in ("weight", "bias"):
        take(f"patch_embed.proj.{name}", f"patch_embed.{name}")
        take(f"norm.{name}", f"norm.{name}")
        for i in range(cfg.depth):
            for src, dst in BLOCK_KEYS.items():
                take(f"blocks.{i}.{src}.{name}", f"transformer.blocks.{i}.{dst}.{name}")
    out["positions"] = resample_positions(_patch_positions(state["pos_embed"]), cfg.grid)
    used.add("pos_embed")
    unmapped = sorted(k for k in state if k not in used and not k.startswith(DROPPED))
    if unmapped:
        raise ValueError(f"keys vltk's ViT has no place for: {', '.join(unmapped[:4])}"
                         f"{f' and {len(unmapped) - 4} more' if len(unmapped) > 4 else ''}")
    return out


def load_timm_vit(vit: ViT, path: Path) -> None:
    """Load the timm-format ViT state dict in the `.safetensors` file `path` into `vit` (strict, in place).

    Every problem is one VltkError line naming the file: missing or unreadable, a missing or unmapped key, a tensor
    whose shape does not fit `vit.cfg` (another width, depth, MLP width or patch size)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise VltkError(f"ViT weights not found: {path}")
    try:
        state = load_file(path)
    except Exception as err:  # safetensors raises several kinds for a foreign or truncated file
        raise VltkError(f"{path} is not a readable .safetensors file ({type(err).__name__}: {err})") from None
    try:
        mapped = timm_to_vltk(state, vit.cfg)
    except KeyError as err:
        missing = err.args[0]
        raise VltkError(f"{path} is not a timm ViT with {vit.cfg.depth} blocks: key {missing!r} is missing") from None
    except ValueError as err:
        raise VltkError(f"{path}: {err}") from None
    expected = vit.state_dict()
    for key, tensor in mapped.items():
        if tensor.shape != expected[key].shape:
            raise VltkError(f"{path}: {key} has shape {tuple(tensor.shape)}, but this ViT's is "
                            f"{tuple(expected[key].shape)} (width {vit.cfg.width}, patch {vit.cfg.patch_size}, "
                            f"MLP {vit.cfg.trunk.hidden})")
    vit.load_state_dict(mapped)
