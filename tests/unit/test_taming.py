"""The taming checkpoint loader: a random state dict in taming's own key layout (tests.factories.taming_shapes, written
out from taming's module structure, `taming/modules/diffusionmodules/model.py` and `taming/models/vqgan.py`), saved
as a Lightning checkpoint, must land tensor for tensor in `VQGAN` with strict loading; the released f16-16384 layout
must read back as taming's f16-16384 config and size."""

from __future__ import annotations

import pickle

import pytest
import torch

from vltk.errors import VltkError
from vltk.imagetok.taming import infer_config, load_taming_checkpoint, rename
from vltk.imagetok.vqgan import VQGAN

from tests.factories import taming_shapes


# The released structure (5 levels, 2 blocks, attention at the lowest side and in the middles) at a small width.
TINY = dict(ch=16, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(2,), resolution=32, z_channels=8,
            embed_dim=4, n_embed=32)


@pytest.fixture()
def taming_file(tmp_path):
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=generator) for k, shape in taming_shapes(**TINY).items()}
    extras = {"loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4),
              "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1), "loss.logvar": torch.zeros(())}
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 1234, "state_dict": {**state, **extras}}, path)
    return path, state


def test_every_tensor_lands_and_strict_loading_succeeds(taming_file):
    path, taming_state = taming_file
    cfg, state = load_taming_checkpoint(path, image_size=32)
    assert cfg.encoder.channels == 16 and cfg.encoder.channel_mult == (1, 1, 2, 2, 4)
    assert cfg.encoder.num_res_blocks == 2 and cfg.encoder.attn_resolutions == (2,) and cfg.encoder.z_channels == 8
    assert (cfg.quantizer.codebook_size, cfg.quantizer.code_dim, cfg.quantizer.beta) == (32, 4, 0.25)
    assert cfg.quantizer.legacy and not cfg.quantizer.ema and not cfg.quantizer.l2_norm
    model = VQGAN(cfg)
    model.load_state_dict(state, strict=True)
    own = model.state_dict()
    for key, tensor in taming_state.items():
        assert torch.equal(own[rename(key)], tensor), key
    assert len(own) == len(taming_state) + 2  # + the quantizer's ema_count and initialized buffers
    assert torch.equal(model.quantizer.codebook, taming_state["quantize.embedding.weight"])
    assert torch.equal(model.encoder.down[2].block[0].shortcut.weight,  # 16 -> 32 channels: a projection
                       taming_state["encoder.down.2.block.0.nin_shortcut.weight"])
    assert torch.equal(model.decoder.mid.attn_1.proj.bias, taming_state["decoder.mid.attn_1.proj_out.bias"])
    assert model.eval().encode(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 2)


def test_the_released_layout_reads_as_the_f16_16384_config():
    f16 = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=256,
               z_channels=256, embed_dim=256, n_embed=16384)
    state = {k: torch.empty(shape, device="meta") for k, shape in taming_shapes(**f16).items()}
    cfg = infer_config(state, 256, "released")
    assert cfg.grid_size == 16 and cfg.encoder.attn_resolutions == (16,) and cfg.quantizer.codebook_size == 16384
    with torch.device("meta"):
        model = VQGAN(cfg)
    assert {rename(k) for k in state} | {"quantizer.ema_count", "quantizer.initialized"} == set(model.state_dict())
    codebook = 16384 * 256
    params = sum(p.numel() for p in model.parameters()) - codebook
    assert 70e6 < params < 74e6 and codebook == pytest.approx(4.2e6, rel=0.01)  # taming: ~72M + a 4.2M codebook


def test_a_damaged_checkpoint_is_a_clear_error(taming_file, tmp_path):
    path, taming_state = taming_file
    with pytest.raises(VltkError, match="not found"):
        load_taming_checkpoint(tmp_path / "nothing.ckpt")
    damaged = tmp_path / "damaged.ckpt"
    torch.save({"state_dict": {k: v for k, v in taming_state.items() if k != "decoder.up.1.block.2.conv1.bias"}},
               damaged)
    with pytest.raises(VltkError, match="missing: decoder.up.1.block.2.conv1.bias"):
        load_taming_checkpoint(damaged, image_size=32)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, other)
    with pytest.raises(VltkError, match="not a taming VQGAN checkpoint"):
        load_taming_checkpoint(other)


class Payload:  # an object that only an unsafe (non-weights_only) unpickler would construct
    pass


def test_loading_never_runs_pickled_code(taming_file, tmp_path):
    _, taming_state = taming_file
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": taming_state, "payload": Payload()}, unsafe, pickle_module=pickle)
    with pytest.raises(VltkError, match="cannot read"):
        load_taming_checkpoint(unsafe, image_size=32)
