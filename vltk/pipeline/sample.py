"""`vltk sample`: generate with a trained MAGVLT or ARGVLT: text-to-image, captions, pairs, inpainting, infilling.

    vltk sample build/demo/gen build/demo/samples-t2i --task t2i                  # prompts: the val split's captions
    vltk sample build/demo/gen build/demo/samples-t2i --task t2i --prompt "a small red circle"
    vltk sample build/demo/gen build/demo/samples-i2t --task i2t --count 32       # captions for val images

The generator's manifest names its encoded data and tokenizers, so nothing else is given. Prompts come from `--prompt`
(repeatable) or else from the first caption of the first `count` records of the encoded artifact's `split`; images
(i2t, inpaint, infill) from the same records. `inpaint` regenerates the central block of the image (a quarter of the
tokens) given the rest and the caption, then blends it into the source along the boundary; `infill` regenerates the
central half of the caption given the image and the rest of it, with the true length; `it2it` draws `count`
unconditional image + caption pairs (MAGVLT only).

The artifact holds `images/{i:05d}.png` (the generated image, or for i2t / infill the source image), `grid.png`, and
`samples.jsonl`: index, task, prompt, caption (generated for i2t / infill / it2it), the record's key, all its
reference captions and, for shapes data, whether it holds a held-out colour-shape pair (for `vltk score`), the batch
seed and the file. Every knob of the samplers is a config key
(`magvlt.*`, `argvlt.*`) with the paper's default; runs are repeatable by `seed` (for a given batch size).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from vltk import artifacts
from vltk.data.encoded import Encoded, iter_encoded
from vltk.data.images import image_grid, to_uint8
from vltk.config import require_positive
from vltk.errors import VltkError
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.masking import span_mask
from vltk.models.artifact import load_generator
from vltk.sampling import argvlt as ar
from vltk.sampling import magvlt as mg
from vltk.text.bpe import BPETokenizer
from vltk.ui import progress

STAGE = "sample"
Task = Literal["t2i", "i2t", "it2it", "inpaint", "infill"]
TASKS: dict[str, tuple[str, ...]] = {  # which generator does which task
    "magvlt": ("t2i", "i2t", "it2it", "inpaint", "infill"),
    "argvlt": ("t2i", "i2t", "inpaint"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleConfig:
    task: Task = "t2i"
    prompts: tuple[str, ...] = ()  # t2i / inpaint prompts; empty: the captions of the split's records
    count: int = 64  # records of the split (or it2it pairs) to sample for
    split: str = "val"
    batch_size: int = 32
    seed: int = 0
    columns: int = 8  # of grid.png
    magvlt: mg.MAGVLTSampling = dataclasses.field(default_factory=mg.MAGVLTSampling)
    argvlt: ar.ARGVLTSampling = dataclasses.field(default_factory=ar.ARGVLTSampling)

    def __post_init__(self) -> None:
        require_positive(self, "count", "batch_size", "columns")


@dataclasses.dataclass(frozen=True)
class Item:
    """One thing to sample for: a caption row and/or an image's codes, and what to list beside the result."""

    text: np.ndarray | None  # (C,) MAGVLT row
    codes: np.ndarray | None  # (N,) raster codes
    about: dict[str, Any]


def _records(encoded: Path, split: str, count: int) -> list[Encoded]:
    try:
        return list(itertools.islice(iter_encoded(encoded, split), count))
    except VltkError as err:
        raise VltkError(f"{err} (the generator was trained on {encoded})") from None


def gather(cfg: SampleConfig, encoded: Path, tokenizer: BPETokenizer) -> list[Item]:
    """What the task samples for: prompts, or the first `count` records of the split (none for it2it)."""
    if cfg.task == "it2it":
        return [Item(None, None, {}) for _ in range(cfg.count)]
    if cfg.prompts and cfg.task == "t2i":
        rows = tokenizer.encode_batch(list(cfg.prompts))
        return [Item(row, None, {"prompt": prompt}) for row, prompt in zip(rows, cfg.prompts)]
    if cfg.prompts:
        raise VltkError(f"--prompt is for t2i; {cfg.task} samples for the records of the '{cfg.split}' split")
    records = _records(encoded, cfg.split, cfg.count)
    if not records:
        raise VltkError(f"{encoded} has no records in its '{cfg.split}' split")
    return [Item(record.text[0], record.image["codes"].reshape(-1),
                 {"prompt": record.captions[0], "key": record.key, "references": list(record.captions),
                  **({"heldout": record.meta["heldout"]} if "heldout" in record.meta else {})})
            for record in records]


def _long(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays).astype(np.int64)).to(device)


def sample_batch(model: torch.nn.Module, generator_kind: str, task: str, items: list[Item], cfg: SampleConfig,
                 eos_id: int, grid: int, generator: torch.Generator, device: torch.device
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(generated codes (B, N) or None, generated text rows (B, C) or None, the inpainted region (B, N) or None)."""
    magvlt = generator_kind == "magvlt"
    text = _long([it.text for it in items], device) if items[0].text is not None else None
    codes = _long([it.codes for it in items], device) if items[0].codes is not None else None
    lengths = mg.window_lengths(text, eos_id) if text is not None else None  # (B,) n_txt, EOS included
    if task == "t2i":
        if magvlt:
            return mg.generate_images(model, text, lengths, cfg.magvlt, generator), None, None
        return ar.generate_images(model, text, cfg.argvlt, generator), None, None
    if task == "i2t":
        if magvlt:
            return None, mg.generate_text(model, codes, cfg.magvlt, generator, eos_id=eos_id).ids, None
        return None, ar.generate_text(model, codes, cfg.argvlt, generator, eos_id=eos_id)[0], None
    if task == "inpaint":
        region = mg.center_box(grid).to(device).expand(len(items), -1)
        if magvlt:
            out = mg.generate_images(model, text, lengths, cfg.magvlt, generator, image=codes, masked=region)
        else:
            out = ar.inpaint(model, codes, region, text, cfg.argvlt, generator)
        return out, None, region
    if task == "infill":
        start_count = [mg.infill_span(int(n) - 1) for n in lengths.tolist()]  # n - 1: tokens before the EOS
        starts = torch.tensor([s for s, _ in start_count], device=device)
        ends = starts + torch.tensor([c for _, c in start_count], device=device)
        span = span_mask(starts, ends, text.shape[1])
        return None, mg.generate_text(model, codes, cfg.magvlt, generator, eos_id=eos_id, text=text,
                                      masked=span).ids, None
    pairs_codes, captions = mg.generate_pairs(model, len(items), cfg.magvlt, generator, eos_id=eos_id)
    return pairs_codes, captions.ids, None


def run(cfg: SampleConfig, gen: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Sample `cfg.task` with the generator at `gen` into the artifact `out`."""
    gen, out = Path(gen), Path(out)
    model, contents = load_generator(gen)
    kind = contents["generator"]
    if cfg.task not in TASKS[kind]:
        raise VltkError(f"{kind} cannot do {cfg.task} (it does {', '.join(TASKS[kind])})")
    encoded = Path(contents["encoded"])
    tokenizer_paths = contents["tokenizers"]
    for name, path in tokenizer_paths.items():
        if not (Path(path) / artifacts.MANIFEST).is_file():
            raise VltkError(f"the {name} tokenizer {path} that {gen} was trained with is gone")
    tokenizer = BPETokenizer.from_artifact(Path(tokenizer_paths["text"]))
    items = gather(cfg, encoded, tokenizer)
    job = artifacts.begin(out, stage=STAGE, config=cfg, inputs={"generator": gen}, force=force)
    if job is None:
        return out
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    model = model.to(device)
    image_tok, _ = load_image_tokenizer(Path(tokenizer_paths["image"]))
    image_tok = image_tok.to(device)
    eos, grid = tokenizer.eos_id, int(contents["grid_size"])
    (job.work / "images").mkdir()
    pictures, lines = [], []
    with progress(f"sample {cfg.task} ({kind})", len(items), unit="sample") as advance:
        for start in range(0, len(items), cfg.batch_size):
            batch = items[start:start + cfg.batch_size]
            seed = cfg.seed + start
            generator = torch.Generator(device).manual_seed(seed)
            codes, text, region = sample_batch(model, kind, cfg.task, batch, cfg, eos, grid, generator, device)
            shown = codes if codes is not None else _long([it.codes for it in batch], device)
            with torch.inference_mode():
                images = image_tok.decode(shown.view(-1, grid, grid)).float().clamp(-1, 1)
                if region is not None:  # inpainting: blend the generated region into the source image
                    source = image_tok.decode(_long([it.codes for it in batch], device).view(-1, grid, grid))
                    images = mg.blend(images, source.float().clamp(-1, 1), region, grid)
            captions = tokenizer.decode_batch(text.cpu().numpy()) if text is not None else [None] * len(batch)
            for i, (picture, caption, item) in enumerate(zip(to_uint8(images), captions, batch), start):
                file = f"images/{i:05d}.png"
                Image.fromarray(picture).save(job.work / file)
                pictures.append(picture)
                lines.append({"index": i, "task": cfg.task, **item.about, "caption": caption, "seed": seed,
                              "file": file})
            advance(len(batch))
    with open(job.work / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    image_grid(np.stack(pictures), cfg.columns, min_side=64).save(job.work / "grid.png")
    return job.publish({
        "task": cfg.task, "generator": kind, "count": len(lines), "grid": "grid.png",
        "image_size": int(pictures[0].shape[0]), "encoded": str(encoded), "tokenizers": tokenizer_paths,
        "summary": f"{len(lines)} {cfg.task} samples from {kind} {contents['model']['size']}",
    })
