"""Stage `decode`: image token grids or latents back to pictures, for checks and for sampling.

    vltk decode build/demo/encoded build/demo/decoded --image-tok build/demo/image-tok --split val --count 64
    vltk decode codes.npy build/demo/decoded --image-tok build/demo/image-tok     # (N, h, w) ids or (N, d, h, w) z

The source is an encoded artifact (the first `count` records of `split`; a `mixsel-*` split shows the mixed images), a
.npy file, or a folder of .npy files: VQ code ids (h, w) or (N, h, w), or VAE latents z (d, h, w) or (N, d, h, w).
The artifact holds `images/{i:05d}.png`, `grid.png` (all of them, row by row) and `samples.jsonl` (index, file, key
and captions where the source has them). An encoded artifact must have been made with the same image tokenizer:
codes decoded by another tokenizer are noise.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from PIL import Image

from vltk import artifacts
from vltk.data.encoded import EncodedSample, iter_encoded
from vltk.data.images import image_grid, to_uint8
from vltk.config import require_range
from vltk.errors import VltkError
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.records import ImageTokenizerContents, Stage
from vltk.train.launch import local_device
from vltk.ui import progress

STAGE = Stage.DECODE


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    split: str = "val"  # of an encoded artifact
    count: int = 64  # decode at most this many (an encoded split's first records, or a .npy's first rows)
    batch_size: int = 64
    latent: Literal["mean", "sample"] = "mean"  # VAE records: decode the posterior mean, or one z sampled from it
    seed: int = 0  # for latent = "sample"
    columns: int = 8  # of grid.png

    def __post_init__(self) -> None:
        require_range(self, "count", "batch_size", "columns")


@dataclasses.dataclass(frozen=True)
class CodeGrid:
    """One picture to decode: {"codes"} | {"mean", "logvar"} | {"z"}, and what to list beside it."""

    image: dict[str, np.ndarray]
    about: dict[str, Any]


def run(cfg: DecodeConfig, source: Path, image_tok: Path, out: Path, *, force: bool = False) -> Path:
    source, image_tok = Path(source), Path(image_tok)
    model, tok = load_image_tokenizer(image_tok)
    if (source / artifacts.MANIFEST).is_file():
        items = _from_encoded(source, image_tok, cfg.split)
    elif source.exists():
        items = _from_npy(source, tok)
    else:
        raise VltkError(f"decode source not found: {source} (give an encoded artifact, a .npy file or a folder of "
                        "them)")
    items = list(itertools.islice(items, cfg.count))
    if not items:
        raise VltkError(f"{source} holds nothing to decode" + (f" in split '{cfg.split}'" if source.is_dir() else ""))
    job = artifacts.begin(out, stage=STAGE, config=cfg, inputs={"source": source, "image_tok": image_tok}, force=force)
    if job is None:
        return Path(out)
    for item in items:
        check(item.image, tok)
    device = local_device()
    model = model.to(device)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    (job.work / "images").mkdir()
    pictures = []
    with progress("decode", len(items), unit="img") as advance, open(job.work / "samples.jsonl", "w") as index:
        for start in range(0, len(items), cfg.batch_size):
            batch = items[start : start + cfg.batch_size]
            for i, picture in enumerate(decode_images(model, [it.image for it in batch], cfg.latent,
                                                      generator), start):
                file = f"images/{i:05d}.png"
                Image.fromarray(picture).save(job.work / file)
                index.write(json.dumps({"index": i, "file": file, **batch[i - start].about}) + "\n")
                pictures.append(picture)
            advance(len(batch))
    image_grid(np.stack(pictures), cfg.columns).save(job.work / "grid.png")
    size = pictures[0].shape[0]
    return job.publish({
        "count": len(pictures), "kind": tok.kind, "image_size": size, "grid": "grid.png",
        "source": "encoded" if (source / artifacts.MANIFEST).is_file() else "npy",
        "summary": f"{len(pictures)} images of {size} px decoded by the {tok.kind} tokenizer",
    })


def _from_encoded(encoded: Path, image_tok: Path, split: str) -> Iterator[CodeGrid]:
    manifest = artifacts.open_artifact(encoded, Stage.ENCODE)
    if manifest["inputs"]["image_tok"].get("hash") != artifacts.manifest_hash(image_tok):
        made_with = artifacts.input_path(encoded, manifest, "image_tok")
        raise VltkError(f"{encoded} was encoded with the image tokenizer {made_with}, not {image_tok}; "
                        "decode it with the tokenizer that made it")
    for record in iter_encoded(encoded, split):
        if isinstance(record, EncodedSample):
            yield CodeGrid(record.image, {"key": record.key, "captions": list(record.captions)})
        else:  # a MixSel pair: its mixed image
            yield CodeGrid(record.image, {"key": record.key, "direction": record.direction,
                                      "captions_a": list(record.a.captions), "captions_b": list(record.b.captions)})


def _from_npy(path: Path, tok: ImageTokenizerContents) -> Iterator[CodeGrid]:
    files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
    if not files:
        raise VltkError(f"{path} holds no .npy files")
    single = 2 if tok.kind == "vqgan" else 3  # dims of one grid: (h, w) codes or (d, h, w) latents
    for file in files:
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise VltkError(f"cannot read {file} as .npy: {err}") from None
        if array.ndim == single:
            array = array[None]
        for row, grid in enumerate(array):
            image = {"codes": grid} if tok.kind == "vqgan" else {"z": grid}
            yield CodeGrid(image, {"file_source": file.name, "row": row})


def check(image: dict[str, np.ndarray], tok: ImageTokenizerContents) -> None:
    """An error naming both when an array does not fit the tokenizer (kind, grid, channels, code range)."""
    grid = tok.grid_size
    if tok.kind == "vqgan":
        codes = image.get("codes")
        if codes is None:
            raise VltkError(f"the image tokenizer is a VQ-GAN, which decodes code ids, not latents {sorted(image)}")
        if codes.shape != (grid, grid) or not np.issubdtype(codes.dtype, np.integer):
            raise VltkError(f"code grids must be integer ({grid}, {grid}) for this tokenizer, got {codes.shape} "
                            f"{codes.dtype}")
        if codes.min() < 0 or codes.max() >= tok.codebook_size:
            raise VltkError(f"code ids must be in [0, {tok.codebook_size}), got {codes.min()}..{codes.max()}")
        return
    if "codes" in image:
        raise VltkError("the image tokenizer is a beta-VAE, which decodes latents, not code ids")
    shape = (tok.latent_channels, grid, grid)
    for name, array in image.items():
        if array.shape != shape:
            raise VltkError(f"latents must be (d, h, w) = {shape} for this tokenizer, got {name} {array.shape}")


def decode_images(model: torch.nn.Module, images: list[dict[str, np.ndarray]], latent: str = "mean",
                  generator: torch.Generator | None = None) -> np.ndarray:
    """Pictures (N, H, W, 3) uint8 of one batch of code grids, posteriors (mean/logvar) or latents z."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        if "codes" in images[0]:
            decoded = model.decode(torch.from_numpy(np.stack([i["codes"] for i in images]).astype(np.int64)).to(device))
        else:
            if "z" in images[0]:
                z = _stack(images, "z", device)
            else:
                mean = _stack(images, "mean", device)  # (B, d, h, w)
                z = model.sample(mean, _stack(images, "logvar", device), generator) if latent == "sample" else mean
            decoded = model.decode(z)
    return to_uint8(decoded)


def _stack(images: list[dict[str, np.ndarray]], name: str, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack([i[name] for i in images]).astype(np.float32)).to(device)

