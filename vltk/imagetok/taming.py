"""Load the released taming VQ-GAN checkpoints (`vqgan_imagenet_f16_16384`, MAGVLT's tokenizer) into `VQGAN`.

    cfg, state = load_taming_checkpoint(Path("vqgan_imagenet_f16_16384/checkpoints/last.ckpt"))
    model = VQGAN(cfg); model.load_state_dict(state)           # strict: every tensor has its place

The file is a Lightning checkpoint read with `weights_only=True` (where users get it: `vltk.weights.TAMING_F16_16384`;
no hash is published with it, and any taming VQGAN checkpoint loads); its `state_dict` keys follow taming's modules,
which `vltk.imagetok.cnn` mirrors name for name except for this table (taming/models/vqgan.py):

    taming                        vltk
    quantize.embedding.weight  -> quantizer.codebook
    *.nin_shortcut.*           -> *.shortcut.*          (ResnetBlock's 1x1 projection of its input)
    *.attn*.proj_out.*         -> *.proj.*              (AttnBlock's output projection)
    loss.*                     -> dropped               (LPIPS and discriminator of the training loss)
    (absent)                   -> quantizer.ema_count = 1, quantizer.initialized = True   (usage bookkeeping)

The architecture is read off the tensors' shapes (levels, widths, blocks, attention levels, z and code widths, codebook
size); only the input side, which leaves no trace in the weights, is an argument (256 for the released models).
The quantizer is taming's: squared-L2 lookup, beta 0.25 on the codebook term (`legacy=True`), no EMA.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vltk.errors import VltkError
from vltk.imagetok.config import CNNConfig, ImageTokenizerConfig, QuantizerConfig
from vltk.imagetok.vqgan import VQGAN
from vltk.train.checkpoint import layout_mismatch
from vltk.weights import TAMING_F16_16384, require

RENAMES = [  # (pattern, replacement) applied in order to every kept key
    (r"^quantize\.embedding\.weight$", "quantizer.codebook"),
    (r"\.nin_shortcut\.", ".shortcut."),
    (r"\.proj_out\.", ".proj."),
]
DROPPED = re.compile(r"^loss\.")


def rename(key: str) -> str:
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def load_taming_checkpoint(path: Path, image_size: int = 256) -> tuple[ImageTokenizerConfig, dict[str, torch.Tensor]]:
    """A taming VQGAN checkpoint -> (its config, a state dict for `VQGAN(config)`)."""
    path = Path(path)
    require(path, TAMING_F16_16384, "taming checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one that needs arbitrary pickle code
        detail = " ".join(str(err).split())[:300]  # torch's weights_only refusal spans many lines
        raise VltkError(f"cannot read taming checkpoint {path}: {detail} ({TAMING_F16_16384.hint})") from None
    source = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(source, dict) or "quantize.embedding.weight" not in source:
        raise VltkError(f"{path} is not a taming VQGAN checkpoint (no state_dict with quantize.embedding.weight; "
                        f"{TAMING_F16_16384.hint})")
    source = {k: v for k, v in source.items() if not DROPPED.match(k)}
    cfg = infer_config(source, image_size, path)
    state = {rename(k): v for k, v in source.items()}
    k = cfg.quantizer.codebook_size
    state["quantizer.ema_count"] = torch.ones(k)
    state["quantizer.initialized"] = torch.tensor(True)
    _check_against_model(state, cfg, path)
    return cfg, state


def infer_config(state: dict[str, torch.Tensor], image_size: int, path: Path) -> ImageTokenizerConfig:
    """Read the architecture off the shapes of a taming state dict (taming's own key names)."""
    def indices(pattern: str) -> set[int]:
        return {int(m.group(1)) for key in state if (m := re.match(pattern, key))}

    try:
        levels = max(indices(r"^encoder\.down\.(\d+)\.")) + 1
        channels = state["encoder.conv_in.weight"].shape[0]
        mult = tuple(state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // channels for i in range(levels))
        blocks = max(indices(r"^encoder\.down\.0\.block\.(\d+)\.")) + 1
        attn = {image_size // 2**i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in state}
        if "encoder.mid.attn_1.q.weight" in state:
            attn.add(image_size // 2 ** (levels - 1))
        codebook_size, code_dim = state["quantize.embedding.weight"].shape
        cfg = ImageTokenizerConfig(
            kind="vqgan", image_size=image_size,
            encoder=CNNConfig(channels=channels, channel_mult=mult, num_res_blocks=blocks,
                              attn_resolutions=tuple(sorted(attn, reverse=True)),
                              z_channels=state["encoder.conv_out.weight"].shape[0]),
            quantizer=QuantizerConfig(codebook_size=codebook_size, code_dim=code_dim, beta=0.25, legacy=True),
        )
    except (KeyError, ValueError) as err:
        raise VltkError(f"{path}: cannot read a taming VQGAN architecture from its weights ({err})") from None
    return cfg


def _check_against_model(state: dict[str, torch.Tensor], cfg: ImageTokenizerConfig, path: Path) -> None:
    with torch.device("meta"):  # shapes only, no memory
        expected = {k: tuple(v.shape) for k, v in VQGAN(cfg).state_dict().items()}
    if problem := layout_mismatch({k: tuple(v.shape) for k, v in state.items()}, expected):
        raise VltkError(f"{path} does not fit the taming VQGAN architecture read from it ({problem})")
