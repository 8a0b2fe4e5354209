"""CLIP similarity of images and texts through open_clip, with weights from a local file (CLIP score, re-ranking).

    clip = load_clip(Path("open_clip_model.safetensors"), "ViT-B-32-quickgelu", "cuda")
    similarity = clip_similarity(clip, [Image.open("a.png")], ["a red circle"])   # (1,) cosine in [-1, 1]
    clip_score(similarity)                       # {"cosine": 0.3176, "clipscore": 31.76}

The image goes through open_clip's own validation transform for the architecture (ViT-B-32: bicubic resize to 224,
centre crop, CLIP's mean and std) and the text through its tokenizer (CLIP's BPE, 77 tokens), as openai/CLIP's
clip/clip.py prepares them for the model. The weights file is an open_clip state dict (`.safetensors`, or a torch file
read with `weights_only=True`; open_clip's loader also takes a `{"state_dict": ...}` training checkpoint); nothing is
downloaded. MAGVLT re-ranks and scores with OpenAI's CLIP ViT-B/32, which uses QuickGELU: with OpenAI's weights (e.g.
`open_clip_model.safetensors` of timm/vit_base_patch32_clip_224.openai, `vltk.weights.CLIP_VIT_B32`) pass
`ViT-B-32-quickgelu`; plain `ViT-B-32` is for weights trained with GELU (LAION's). The activation has no weights, so a
mismatch cannot be detected from the file; nor is the file checked against a hash, as any architecture's weights may be
given. The TorchScript `ViT-B-32.pt` that OpenAI's package downloads is not a state dict and is refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from vltk.errors import VltkError
from vltk.weights import CLIP_VIT_B32, require


@dataclasses.dataclass(frozen=True)
class Clip:
    model: torch.nn.Module  # an open_clip CLIP in eval mode
    preprocess: Callable  # open_clip's own val transform (PIL -> (3, S, S) tensor)
    tokenizer: Callable  # open_clip's tokenizer for the arch (list[str] -> (B, context) LongTensor)
    device: torch.device


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise VltkError("CLIP scores need open_clip: pip install 'vltk[clip]'") from None
    return open_clip


def load_clip(weights: Path, arch: str = "ViT-B-32-quickgelu", device: str | torch.device = "cpu") -> Clip:
    """open_clip's `arch` with the weights at `weights`, its val transform and tokenizer."""
    open_clip = _open_clip()
    weights = Path(weights)
    require(weights, CLIP_VIT_B32, "CLIP weights")
    if arch not in open_clip.list_models():  # also refuses 'hf-hub:...' names, which would download
        raise VltkError(f"unknown CLIP architecture {arch!r} (open_clip has e.g. ViT-B-32, ViT-B-32-quickgelu, "
                        "ViT-B-16, ViT-L-14)")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(weights), device=device,
                                                                     weights_only=True)
    except Exception as err:  # open_clip / torch raise many kinds for a foreign file or a mismatched state dict
        if "TorchScript" in str(err):
            raise VltkError(f"{weights} is a TorchScript archive (like OpenAI's ViT-B-32.pt), which is not loaded: "
                            f"give an open_clip state dict ({CLIP_VIT_B32.hint})") from None
        detail = " ".join(str(err).split())[:300]
        raise VltkError(f"{weights} is not an open_clip {arch} state dict ({type(err).__name__}: {detail}; "
                        f"{CLIP_VIT_B32.hint})") from None
    return Clip(model.eval(), preprocess, open_clip.get_tokenizer(arch), torch.device(device))


def clip_similarity(clip: Clip, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
    """(B,) float32 cosine similarity of image i with text i, in [-1, 1] (on the CPU)."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    pixels = torch.stack([clip.preprocess(image.convert("RGB")) for image in images]).to(clip.device)
    tokens = clip.tokenizer(list(texts)).to(clip.device)
    with torch.inference_mode():
        image_embeddings = clip.model.encode_image(pixels, normalize=True)  # (B, E), unit norm
        text_embeddings = clip.model.encode_text(tokens, normalize=True)  # (B, E)
    return (image_embeddings * text_embeddings).sum(-1).float().cpu()


def clip_score(similarity: torch.Tensor) -> dict[str, float]:
    """{"cosine": the mean cosine (MAGVLT's convention, §4.4), "clipscore": torchmetrics' CLIPScore}.

    torchmetrics' CLIPScore.compute() is max(mean(100 cos), 0): it clamps the mean, not each pair's score.
    """
    cosine = float(similarity.double().mean())
    return {"cosine": cosine, "clipscore": max(100 * cosine, 0.0)}
