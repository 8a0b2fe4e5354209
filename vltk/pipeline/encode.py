"""Stage `encode`: every image once through the image tokenizer and every caption through the text tokenizer, into
shards a generator trains on without ever running the tokenizer (plus MixSel's mixed pairs, MAGVLT §3.4).

    vltk encode build/demo/shards build/demo/image-tok build/demo/text-tok build/demo/encoded \
        --config stages/demo/encode.toml
    accelerate launch -m vltk encode SHARDS IMAGE_TOK TEXT_TOK OUT     # one slice of the input tars per process

The output format is `vltk.data.encoded`'s. Work is done per input tar: tar i of a split becomes the output tars
`{split}-{i:06d}-{k:03d}.tar` (and `mixsel-{split}-{i:06d}-{k:03d}.tar`), then a record `progress/{split}-{i:06d}.json`
marks it finished. A killed run restarts where it stopped: `OUT.partial/` is kept when it belongs to the same config
and inputs, finished tars are skipped, a half-written one is redone. Under `accelerate launch` process r of n takes the
input tars r, r+n, ... and process 0 writes the manifest once every process is done.

MixSel pairs are drawn within the current batch window (the `batch_size` images encoded together; a last window of one
image joins the window before it), so memory stays flat however large the split is, and each image of a MixSel split
gets `mixsel_pairs` distinct partners from its own window (fewer when the window is smaller), each pair mixed in
pixel space in a direction drawn 50/50. The draws are seeded by (seed, split, input tar, window): the same config gives
the same pairs whatever the number of processes or restarts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
import torch
from accelerate import PartialState

from vltk import artifacts
from vltk.config import require_range
from vltk.data.encoded import EncodedSample, MixSel, RecordWriter, codes_dtype, mixsel_split
from vltk.data.mixsel import direction_name, draw_directions, draw_partners, mix
from vltk.data.shards import Sample, decode_image, read_tars
from vltk.errors import VltkError
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.records import (
    EncodedContents, ImageTokenizerContents, ShardsContents, Stage, TextTokenizerContents,
)
from vltk.text.bpe import BPETokenizer
from vltk.train.launch import begin_shared, main_progress
from vltk.train.loop import precision
from vltk.ui import console

STAGE = Stage.ENCODE
PROGRESS = "progress"  # in the work directory: one record per finished input tar
# What a generator needs to know about the image tokenizer, copied from its manifest when present.
TOKENIZER_FACTS = ("kind", "image_size", "grid_size", "downsample", "codebook_size", "latent_channels",
                   "normalization", "perceptual", "model")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncodeConfig:
    batch_size: int = 64  # images per tokenizer call; also the window MixSel partners are drawn from
    mixsel_pairs: int = 1  # random partners per image of a MixSel split (0 = no MixSel pairs)
    mixsel_splits: tuple[str, ...] = ("train",)
    seed: int = 0  # MixSel partners and directions
    shard_size: int = 1000  # records per output tar
    # bf16 autocast for the tokenizer's passes, as train.mixed_precision ("auto": on a GPU only); it speeds up GPUs, but
    # VQ codes near a tie may then differ, so encoding stays fp32 ("no") unless asked.
    mixed_precision: Literal["auto", "no", "bf16"] = "no"

    def __post_init__(self) -> None:
        require_range(self, "batch_size", "shard_size")
        require_range(self, "mixsel_pairs", low=0)
        if self.mixsel_pairs and self.mixsel_pairs >= self.batch_size:
            raise ValueError(f"mixsel_pairs ({self.mixsel_pairs}) must be below batch_size ({self.batch_size}): "
                             "partners are distinct images of the same batch window")


@dataclasses.dataclass(frozen=True)
class InputTar:
    """One input tar: the `index`-th tar of `split`."""

    split: str
    index: int
    path: Path

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"


@dataclasses.dataclass(frozen=True)
class Tokenizers:
    """What encoding one window needs: the image encoder (pixels -> stored arrays) and the text tokenizer."""

    images: Callable[[torch.Tensor], list[dict[str, np.ndarray]]]
    text: BPETokenizer
    image_size: int


def run(
    cfg: EncodeConfig, shards: Path, image_tok: Path, text_tok: Path, out: Path, *, force: bool = False,
    cpu: bool = False,
) -> Path:
    """Build the encoded artifact at `out` (on every process of an `accelerate launch`) and return it."""
    shards, image_tok, text_tok, out = Path(shards), Path(image_tok), Path(text_tok), Path(out)
    state = PartialState(cpu=cpu)
    shard_contents = ShardsContents.read(shards)
    text_contents = TextTokenizerContents.read(text_tok)
    model, tok_contents = load_image_tokenizer(image_tok)
    if shard_contents.image_size != tok_contents.image_size:
        raise VltkError(
            f"{shards} holds {shard_contents.image_size} px images but the image tokenizer {image_tok} takes "
            f"{tok_contents.image_size} px ones; re-shard with --size {tok_contents.image_size} or use a "
            f"tokenizer trained at {shard_contents.image_size} px"
        )
    missing = sorted(set(cfg.mixsel_splits) - set(shard_contents.splits))
    if missing:
        raise VltkError(f"mixsel_splits {missing} are not splits of {shards} (it has: "
                        f"{', '.join(shard_contents.splits)})")
    job = begin_shared(state, out, stage=STAGE, config=cfg,
                       inputs={"shards": shards, "image_tok": image_tok, "text_tok": text_tok}, force=force, resume=True)
    if job is None:
        return out
    if state.is_main_process and job.resumed:
        console().print(f"[yellow]resuming[/] the unfinished encode in {job.work}")
    work = job.work
    kind = "vq" if tok_contents.kind == "vqgan" else "vae"
    mixed = precision(cfg.mixed_precision, state.device.type == "cpu", key="mixed_precision")  # "no" or "bf16"
    encoder = _image_encoder(model.to(state.device), kind, tok_contents, cfg, state.device, mixed)
    tokenizers = Tokenizers(images=encoder, text=BPETokenizer.from_artifact(text_tok),
                            image_size=tok_contents.image_size)
    tasks = [InputTar(split, i, shards / name) for split, info in shard_contents.splits.items()
             for i, name in enumerate(info["shards"])]
    mine = tasks[state.process_index :: state.num_processes]
    total = sum(info["samples"] for info in shard_contents.splits.values()) if state.num_processes == 1 else None
    (work / PROGRESS).mkdir(exist_ok=True)
    with main_progress(state, f"encode ({kind}, {state.device})", total, "img") as advance:
        for task in mine:
            record = work / PROGRESS / f"{task.name}.json"
            if record.is_file():  # finished by a run that was killed later
                advance(json.loads(record.read_text())["samples"])
                continue
            artifacts.write_json_atomic(record, encode_tar(cfg, task, tokenizers, work, advance))
    state.wait_for_everyone()
    if state.is_main_process:
        records = [json.loads((work / PROGRESS / f"{t.name}.json").read_text()) for t in tasks]
        for file in (work / PROGRESS).iterdir():
            file.unlink()
        (work / PROGRESS).rmdir()
        contents = _contents(cfg, kind, shard_contents, tok_contents, text_contents, records, str(state.device),
                             state.num_processes, mixed)
        job.publish(contents)
    state.wait_for_everyone()
    return out


def _image_encoder(model: torch.nn.Module, kind: str, tok_contents: ImageTokenizerContents, cfg: EncodeConfig,
                   device: torch.device, mixed: str) -> Callable[[torch.Tensor], list[dict[str, np.ndarray]]]:
    """pixels (N, 3, H, W) in [-1, 1] -> one dict of stored arrays per image, encoded `cfg.batch_size` at a time."""
    dtype = codes_dtype(tok_contents.codebook_size) if kind == "vq" else np.dtype(np.float16)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed == "bf16")

    def encode(pixels: torch.Tensor) -> list[dict[str, np.ndarray]]:
        arrays: list[dict[str, np.ndarray]] = []
        for chunk in pixels.split(cfg.batch_size):
            with torch.inference_mode(), autocast:
                out = model.encode(chunk.to(device))
            if kind == "vq":
                codes = out.cpu().numpy().astype(dtype)  # (B, h, w)
                arrays += [{"codes": c} for c in codes]
            else:
                mean, logvar = (t.float().cpu().numpy().astype(dtype) for t in out)  # (B, d, h, w) each
                arrays += [{"mean": m, "logvar": v} for m, v in zip(mean, logvar)]
        return arrays

    return encode


def encode_tar(cfg: EncodeConfig, task: InputTar, tokenizers: Tokenizers, work: Path,
               advance: Callable[..., None]) -> dict[str, Any]:
    """Encode one input tar into its output tars in `work`; the record of what was written."""
    started = time.perf_counter()
    mixing = task.split in cfg.mixsel_splits and cfg.mixsel_pairs > 0
    names = {task.split: task.name, mixsel_split(task.split): f"{mixsel_split(task.split)}-{task.index:06d}"}
    for prefix in names.values():  # what a run killed half-way through this tar left
        for stale in work.glob(f"{prefix}-*.tar"):
            stale.unlink()
    plain = RecordWriter(str(work / f"{names[task.split]}-%03d.tar"), cfg.shard_size)
    mixed = RecordWriter(str(work / f"{names[mixsel_split(task.split)]}-%03d.tar"), cfg.shard_size)
    for w, window in enumerate(windows(read_tars([task.path]), cfg.batch_size)):
        pixels = torch.stack([to_tensor(sample, tokenizers.image_size, task.path) for sample in window])
        records = [
            EncodedSample(key=s.key, image=image, text=tokenizers.text.encode_batch(list(s.captions)),
                          captions=s.captions, source=s.source, meta=s.meta)
            for s, image in zip(window, tokenizers.images(pixels))
        ]
        for record in records:
            plain.write(record)
        if mixing:
            generator = torch.Generator().manual_seed(window_seed(cfg.seed, task.split, task.index, w))
            for pair in mixsel_records(records, pixels, cfg.mixsel_pairs, generator, tokenizers.images):
                mixed.write(pair)
        advance(len(window), info=f"{mixed.samples} MixSel pairs from input tar {task.index}" if mixing else None)
    record: dict[str, Any] = {"split": task.split, "index": task.index,
                              "samples": plain.samples, "captions": plain.captions, "shards": plain.close()}
    if mixing:
        record["mixsel"] = {"samples": mixed.samples, "captions": mixed.captions, "shards": mixed.close()}
    record["seconds"] = time.perf_counter() - started
    return record


def mixsel_records(records: list[EncodedSample], pixels: torch.Tensor, pairs: int, generator: torch.Generator,
                   encode: Callable[[torch.Tensor], list[dict[str, np.ndarray]]]) -> list[MixSel]:
    """MixSel pairs of one window: each image as A with up to `pairs` distinct partners B from the window."""
    partners = draw_partners(len(records), pairs, generator)  # (N, k)
    first = torch.arange(len(records)).repeat_interleave(partners.shape[1])  # (N * k,) A of each pair
    second = partners.flatten()  # (N * k,) B of each pair
    if not len(first):
        return []
    vertical = draw_directions(len(first), generator)
    images = encode(mix(pixels[first], pixels[second], vertical))
    return [
        MixSel(key=f"{records[a].key}__{records[b].key}", direction=direction_name(bool(v)),  # type: ignore[arg-type]
               image=image, a=records[a], b=records[b])
        for a, b, v, image in zip(first.tolist(), second.tolist(), vertical.tolist(), images)
    ]


def windows(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    """Lists of `size` samples; a last list of one sample joins the one before it (so it has a MixSel partner)."""
    iterator = iter(samples)
    previous = list(itertools.islice(iterator, size))
    while previous:
        current = list(itertools.islice(iterator, size))
        if len(current) == 1:
            previous += current
            current = []
        yield previous
        previous = current


def window_seed(seed: int, split: str, index: int, window: int) -> int:
    """The seed of one window's MixSel draws: a hash, so nearby windows get unrelated streams."""
    digest = hashlib.sha256(f"{seed}:{split}:{index}:{window}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # manual_seed takes a non-negative int64


def to_tensor(sample: Sample, size: int, path: Path) -> torch.Tensor:
    """A shard image as (3, H, W) float in [-1, 1]; an image of another size is an error naming both sizes."""
    image = decode_image(sample)
    if image.size != (size, size):
        raise VltkError(f"{path}: image {sample.key} is {image.size[0]}x{image.size[1]} px but the image tokenizer "
                        f"takes {size}x{size} px")
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def _contents(cfg: EncodeConfig, kind: str, shard_contents: ShardsContents, tok_contents: ImageTokenizerContents,
              text_contents: TextTokenizerContents, records: list[dict[str, Any]], device: str, processes: int,
              mixed: str) -> dict[str, Any]:
    splits: dict[str, dict[str, Any]] = {}
    for split in shard_contents.splits:
        names = [split, mixsel_split(split)] if split in cfg.mixsel_splits and cfg.mixsel_pairs else [split]
        for name in names:
            splits[name] = {"samples": 0, "captions": 0, "shards": []}
    for record in records:
        parts = [(record["split"], record)]
        if "mixsel" in record:
            parts.append((mixsel_split(record["split"]), record["mixsel"]))
        for name, part in parts:
            into = splits[name]
            into["samples"] += part["samples"]
            into["captions"] += part["captions"]
            into["shards"] += part["shards"]
    images = sum(s["samples"] for s in splits.values())  # each mixed pair is one more encoded image
    seconds = sum(r["seconds"] for r in records)
    mixsel = {name: s["samples"] for name, s in splits.items() if name.startswith("mixsel-")}
    if kind == "vq":
        size = tok_contents.codebook_size
        image, dtype = {"codebook_size": size}, str(codes_dtype(size))
    else:
        image, dtype = {"latent_channels": tok_contents.latent_channels}, "float16"
    plain = " / ".join(f"{s['samples']} {name}" for name, s in splits.items() if not name.startswith("mixsel-"))
    pairs = f", {sum(mixsel.values())} MixSel pairs" if mixsel else ""
    grid, tok, text = tok_contents.grid_size, tok_contents.to_dict(), text_contents
    return EncodedContents(
        kind=kind, splits=splits, image_size=tok_contents.image_size, grid_size=grid, **image,
        context_length=text.context_length, text_vocab_size=text.vocab_size, eos_id=text.eos_id, pad_id=text.pad_id,
        sep_id=text.sep_id, sot_id=text.sot_id, bpe_dropout=text.bpe_dropout,
        image_tokenizer={k: tok[k] for k in TOKENIZER_FACTS if k in tok},
        extra={
            "dtype": dtype,
            "mixsel": {"pairs_per_image": cfg.mixsel_pairs, "window": cfg.batch_size, "samples": mixsel},
            # Per process: images (mixed ones included) over the encoding seconds summed over every input tar.
            "throughput": {"images_per_s": round(images / seconds, 1) if seconds else None, "images": images,
                           "seconds": round(seconds, 3), "processes": processes, "device": device,
                           "precision": mixed},
            "summary": f"{plain} images as {grid}x{grid} {'tokens' if kind == 'vq' else 'latents'}{pairs}, "
                       f"text context {text.context_length}",
        }).to_dict()
