"""CLIP score: a tiny random-init open_clip architecture saved to a file, loaded by load_clip, against open_clip's own
encode_image / encode_text; the score conventions on a hand-made similarity vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vltk.errors import VltkError
from vltk.metrics.clip import clip_score, clip_similarity, load_clip

from tests import factories


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(arch, weights file, the model) for a random-init tiny CLIP (skipped without open_clip, the `clip` extra)."""
    return factories.tiny_clip(tmp_path_factory.mktemp("clip"))


def pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(3)]


def test_similarity_equals_open_clip(tiny_clip, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    arch, weights, model = tiny_clip
    texts = ["a small red circle", "a large blue square above a green triangle", ""]
    expected_tokens = open_clip.tokenize(texts)  # CLIP's BPE, 77 tokens
    # open_clip's own val transform for 32 px: bicubic resize, centre crop, CLIP's mean and std.
    mean, std = torch.tensor(open_clip.OPENAI_DATASET_MEAN), torch.tensor(open_clip.OPENAI_DATASET_STD)
    pixels = torch.stack([(torch.from_numpy(np.asarray(p.resize((32, 32), Image.BICUBIC), np.float32) / 255)
                           .permute(2, 0, 1) - mean[:, None, None]) / std[:, None, None] for p in pictures()])
    with torch.no_grad():
        a = model.encode_image(pixels)
        b = model.encode_text(expected_tokens)
    expected = (a / a.norm(dim=-1, keepdim=True) * (b / b.norm(dim=-1, keepdim=True))).sum(-1)
    for file in (weights, tmp_path / "tiny.pt"):  # safetensors, and a torch file read with weights_only
        if file.suffix == ".pt":
            torch.save({"state_dict": model.state_dict()}, file)  # an open_clip training checkpoint
        clip = load_clip(file, arch)
        assert not clip.model.training and torch.equal(clip.tokenizer(texts), expected_tokens)
        similarity = clip_similarity(clip, pictures(), texts)
        assert similarity.dtype == torch.float32 and similarity.shape == (3,)
        torch.testing.assert_close(similarity, expected, rtol=1e-4, atol=1e-5)
        assert (similarity.abs() <= 1).all()


def test_clip_score_hand_computed():
    # mean cosine (0.3 - 0.1 + 0.2) / 3 = 0.1333; torchmetrics clamps 100 x the mean at 0: 13.33.
    assert clip_score(torch.tensor([0.3, -0.1, 0.2])) == pytest.approx({"cosine": 0.4 / 3, "clipscore": 40 / 3})
    assert clip_score(torch.tensor([-0.2, 0.1])) == pytest.approx({"cosine": -0.05, "clipscore": 0.0})


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")  # torch.jit, to build the archive
def test_load_errors(tiny_clip, tmp_path):
    arch, weights, _ = tiny_clip
    with pytest.raises(VltkError, match="CLIP weights not found"):
        load_clip(tmp_path / "missing.safetensors", arch)
    with pytest.raises(VltkError, match="unknown CLIP architecture 'hf-hub:timm/x'"):
        load_clip(weights, "hf-hub:timm/x")
    other = tmp_path / "other.safetensors"
    save_file({"logit_scale": torch.zeros(())}, other)
    with pytest.raises(VltkError, match=f"other.safetensors is not an open_clip {arch} state dict") as err:
        load_clip(other, arch)
    assert "\n" not in str(err.value)
    scripted = tmp_path / "ViT-B-32.pt"  # OpenAI's release is a TorchScript archive: refused, with what to give
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), scripted)
    with pytest.raises(VltkError, match="ViT-B-32.pt is a TorchScript archive"):
        load_clip(scripted, arch)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(VltkError, match="garbage.pt is not an open_clip"):
        load_clip(garbage, arch)
