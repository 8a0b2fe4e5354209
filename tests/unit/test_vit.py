"""vltk's ViT encoder and its timm-format weights (GIVT App. C.3's ViT-L/16): a random timm VisionTransformer saved
as .safetensors loads into vltk's ViT and gives timm's patch features; the position table is resized as big_vision's
order-1 zoom; a missing file, a missing key, an unmapped key and a shape mismatch are one-line VltkErrors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vltk.errors import VltkError
from vltk.models.vit import ViT, ViTConfig
from vltk.models.vit_weights import load_timm_vit, resample_positions

timm = pytest.importorskip("timm")

CFG = ViTConfig(image_size=32, patch_size=8, width=32, depth=2, heads=4, mlp_width=48)


def timm_vit(image_size: int, class_token: bool = True, seed: int = 0) -> torch.nn.Module:
    """A random-init timm ViT of CFG's sizes with a head, its LayerNorms and biases randomised too. With a class
    token pos_embed has its row; without one (global pooling) it has the patches' only."""
    torch.manual_seed(seed)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=image_size, patch_size=CFG.patch_size, embed_dim=CFG.width, depth=CFG.depth, num_heads=CFG.heads,
        mlp_ratio=CFG.trunk.hidden / CFG.width, num_classes=5, class_token=class_token,
        global_pool="token" if class_token else "avg", fc_norm=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def timm_patch_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """timm's token features after the final norm, without the class token: (B, P, E)."""
    return model.forward_features(images)[:, model.num_prefix_tokens:]


def save(model: torch.nn.Module, path, drop: str | None = None) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != drop}
    save_file(state, str(path))


@torch.no_grad()
def test_timm_weights_give_timms_patch_features(tmp_path):
    # Without a class token, as big_vision's encoder (in timm the patches would also attend to it).
    reference = timm_vit(CFG.image_size, class_token=False)
    assert reference.pos_embed.shape == (1, CFG.patches, CFG.width)
    save(reference, tmp_path / "vit.safetensors")
    vit = ViT(CFG).eval()
    load_timm_vit(vit, tmp_path / "vit.safetensors")
    images = torch.rand(2, 3, CFG.image_size, CFG.image_size) * 2 - 1
    torch.testing.assert_close(vit(images), timm_patch_features(reference, images), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_checkpoint_of_another_resolution_has_its_positions_resampled(tmp_path):
    reference = timm_vit(16)  # a 2 x 2 grid, used at 4 x 4
    save(reference, tmp_path / "vit.safetensors")
    vit = ViT(CFG).eval()
    load_timm_vit(vit, tmp_path / "vit.safetensors")
    old = reference.pos_embed[0, 1:].reshape(2, 2, -1)  # (2, 2, E), the class-token row dropped
    new = vit.positions.reshape(4, 4, -1)
    torch.testing.assert_close(new[0, 0], old[0, 0])  # corners on corners (scipy.ndimage.zoom, order 1)
    torch.testing.assert_close(new[3, 3], old[1, 1])
    torch.testing.assert_close(new[0, 1], old[0, 0] * 2 / 3 + old[0, 1] / 3)  # x = 1/3 of the way
    assert resample_positions(vit.positions, 4) is vit.positions
    torch.testing.assert_close(vit.transformer.blocks[1].mlp.fc.weight, reference.blocks[1].mlp.fc1.weight)


def test_loading_errors_are_one_line_and_name_the_problem(tmp_path):
    vit = ViT(CFG)
    with pytest.raises(VltkError, match="not found"):
        load_timm_vit(vit, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VltkError, match="not a readable"):
        load_timm_vit(vit, tmp_path / "junk.safetensors")
    reference = timm_vit(CFG.image_size)
    save(reference, tmp_path / "no_norm.safetensors", drop="norm.weight")
    with pytest.raises(VltkError, match="'norm.weight' is missing"):
        load_timm_vit(vit, tmp_path / "no_norm.safetensors")
    save_file({**reference.state_dict(), "blocks.0.ls1.gamma": torch.ones(CFG.width)}, str(tmp_path / "ls.safetensors"))
    with pytest.raises(VltkError, match="no place for: blocks.0.ls1.gamma"):
        load_timm_vit(vit, tmp_path / "ls.safetensors")
    save(reference, tmp_path / "vit.safetensors")
    wider = ViT(ViTConfig(image_size=32, patch_size=8, width=32, depth=2, heads=4, mlp_width=64))
    with pytest.raises(VltkError, match=r"mlp.fc.weight has shape \(48, 32\).*\(64, 32\)") as err:
        load_timm_vit(wider, tmp_path / "vit.safetensors")
    assert "\n" not in str(err.value)


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="divisible"):
        ViTConfig(width=30, heads=4)
    assert ViTConfig(image_size=512, patch_size=16).patches == 1024
