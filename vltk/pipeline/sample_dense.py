"""`vltk sample GEN OUT --task dense`: UViM's inference (GIVT §4.2, §5.2; UViM, Kolesnikov et al. 2022 §3): label
maps of the shards' images drawn by a `givt-uvim` generator and decoded by its stage-I label autoencoder.

    vltk sample build/demo/gen-uvim-panoptic build/demo/samples-uvim-panoptic --task dense --count 32
    vltk sample GEN OUT --task dense --set givt.temperature=0.85 --set givt.beams=4 --set givt.fans=8   # COCO's
    vltk sample GEN OUT --task dense --split train --count 512 --set givt.temperature=0.9   # t on train records

For the first `count` labelled records of `split` (of the shards the generator was trained on, which its manifest
names), the GIVT reads the image and draws the L label tokens (`vltk.sampling.givt.sample_causal`: ancestral with
the variance scaling t = `givt.temperature`, or beam search with `givt.beams` beams and `givt.fans` fans; code ids
from softmax(logits / t) for the VQ baseline, embedded by the tokenizer's codebook); the label autoencoder decodes
them to a panoptic map [semantic, instance] or to depth in metres. big_vision's settings
(configs/proj/givt/givt_coco_panoptic.py / givt_nyu_depth.py `ar_generation_config`): panoptic t 0.85, 4 beams,
8 fans; depth t 0.9, 2 beams, 8 fans. The paper picks t and the beams on a held-out part of the train split (GIVT
§5.2): sample `--split train` records the generator did not see (shard them as their own split) and score each t
(`make uvim-sweep`).

Seeds: batch k of `batch_size` records is drawn with a generator seeded by `seed` + its first index (as `vltk sample`).
Under `accelerate launch` process r of N draws batches r, r + N, ..., so N processes write what one does; each batch's
rows are kept in `batches/` until the main process merges them, and a killed run resumes from the batches it finished.

The artifact holds per record i `pred/{i:05d}.png` (the prediction colourised for people) and the machine formats:
panoptic `panoptic/{i:05d}.png` (COCO's panoptic PNG, id = R + 256 G + 256^2 B) with `panoptic.json` in COCO's
panoptic results layout ({"annotations": [{"image_id", "file_name", "segments_info"}], "categories"}), or depth
`depth/{i:05d}.png` (16-bit millimetres, `vltk.data.depth`); `grid.png` (images over predictions), and
`samples.jsonl` rows: index, task, key, file (the colourised map), files (every file of the record), seed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image

from vltk import artifacts
from vltk.data import depth as depth_png
from vltk.data import panoptic as panoptic_png
from vltk.data.dense import (LabelSpec, colour_labels, count_labelled, decode_chunk, dense_categories,
                             ordered_batches, ordered_chunks)
from vltk.data.images import image_grid
from vltk.errors import VltkError
from vltk.labeltok.artifact import load_label_tokenizer
from vltk.labeltok.maps import to_coco
from vltk.labeltok.model import LabelAutoencoder
from vltk.models.artifact import load_generator
from vltk.models.givt import GIVT
from vltk.pipeline.tokenize_label import label_spec
from vltk.records import GeneratorContents, SamplesContents, ShardsContents, Stage
from vltk.sampling.generate import check_task
from vltk.sampling.givt import GIVTSampling, sample_causal
from vltk.train.launch import begin_shared, main_progress
from vltk.ui import console
# The config is vltk.pipeline.sample.SampleConfig (task, count, split, batch_size, seed, columns, givt.*), typed Any
# here: that module dispatches to this one.
SampleConfig = Any

STAGE = Stage.SAMPLE
PREDICTIONS = "panoptic.json"
BATCHES = "batches"  # in the work directory: each drawn batch's rows, until the main process merges them


@torch.no_grad()
def predict(model: GIVT, label_model: LabelAutoencoder, cfg: GIVTSampling, images: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
    """images (B, 3, H, W) in [-1, 1] -> the decoded prediction: (B, H, W, 2) long panoptic or (B, H, W) metres."""
    tokens, _ = sample_causal(model, cfg, batch=len(images), image=images, generator=generator)
    z = label_model.embed_codes(tokens) if model.cfg.codebook_size else tokens  # (B, L, d)
    return label_model.predict(label_model.decode(z))


def run(cfg: SampleConfig, gen: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Sample label maps for the first `cfg.count` records of `cfg.split` with the UViM generator `gen` into `out` (on
    every process of an `accelerate launch`: each draws its share of the batches, the main process writes the
    artifact)."""
    gen, out = Path(gen), Path(out)
    record = GeneratorContents.read(gen)
    check_task(record.generator, cfg.task, record.model)
    if cfg.candidates > 1 or cfg.prompts:
        raise VltkError("--task dense samples one label map per record: no --prompt, candidates = 1")
    label_tok, shards = artifacts.upstream(gen, "label_tok"), artifacts.upstream(gen, "shards")
    state = PartialState(cpu=cpu)
    device = state.device
    model, _ = load_generator(gen)
    model.to(device)
    label_model, labels = load_label_tokenizer(label_tok, device)
    spec = label_spec(label_model.cfg, dense_categories(shards) if labels.task == "panoptic" else None)
    found, _ = count_labelled(shards, cfg.split, spec)  # from the json and label members, nothing decoded
    count = min(cfg.count, found) if cfg.count else found
    if not count:
        raise VltkError(f"{shards} has no {spec.task} labels in its '{cfg.split}' split to sample for")
    job = begin_shared(state, out, stage=STAGE, config=cfg, inputs={"generator": gen}, force=force, resume=True)
    if job is None:
        return out
    if state.is_main_process and job.resumed:
        console().print(f"[yellow]resuming[/] the unfinished sampling in {job.work}")
    starts = range(0, count, cfg.batch_size)  # ordered_chunks' chunks are full but the last
    _draw_share(cfg, model, label_model, spec, shards, job.work, starts[state.process_index::state.num_processes],
                count, state)
    state.wait_for_everyone()
    if state.is_main_process:
        _merge(cfg, spec, shards, job.work, starts)
        facts = ShardsContents.read(shards)
        job.publish(_contents(cfg, record, labels, count, facts.image_size, facts.extra.get("categories"),
                              state.num_processes))
    state.wait_for_everyone()
    return out


def _draw_share(cfg: SampleConfig, model: GIVT, label_model: LabelAutoencoder, spec: LabelSpec, shards: Path,
                work: Path, starts: Sequence[int], count: int, state: PartialState) -> None:
    """Draw, decode and write this process's batches (the first indices `starts`; those a killed run finished are
    skipped): each record's PNGs, then the batch's rows of samples.jsonl and of panoptic.json in batches/, last, so
    that a batch is done when its record is there."""
    device, machine = state.device, spec.task  # machine: the folder of the machine format, panoptic/ or depth/
    for folder in ("pred", machine, BATCHES):
        (work / folder).mkdir(exist_ok=True)
    mine = {start: min(cfg.batch_size, count - start) for start in starts}
    with main_progress(state, f"sample dense ({spec.task})", sum(mine.values()), "map") as advance:
        chunks = ordered_chunks(shards, cfg.split, spec, cfg.batch_size, cfg.count)
        for start, chunk in zip(range(0, count, cfg.batch_size), chunks):
            done = _batch_record(work, start)
            if start not in mine:  # another process's: not decoded here
                continue
            if done.is_file():  # a killed run drew it
                advance(len(chunk))
                continue
            images, _, samples = decode_chunk(spec, chunk)
            seed = cfg.seed + start
            generator = torch.Generator(device).manual_seed(seed)
            pixels = images.to(device).float() / 127.5 - 1.0
            pred = predict(model, label_model, cfg.givt, pixels, generator).cpu().numpy()
            lines, annotations = [], []
            for i, p, sample in zip(range(start, start + len(samples)), pred, samples):
                files = {"pred": f"pred/{i:05d}.png", machine: f"{machine}/{i:05d}.png"}
                Image.fromarray(colour_labels(p, spec)).save(work / files["pred"])
                if spec.task == "panoptic":
                    ids, info = to_coco(p, spec.categories)
                    artifacts.write_bytes_atomic(work / files[machine], panoptic_png.encode_png(ids))
                    annotations.append({"image_id": sample.key, "file_name": Path(files[machine]).name,
                                        "segments_info": info})
                else:
                    artifacts.write_bytes_atomic(work / files[machine], depth_png.encode_png(depth_png.to_units(p)))
                lines.append({"index": i, "task": "dense", "key": sample.key, "file": files["pred"], "files": files,
                              "seed": seed})
            artifacts.write_json_atomic(done, {"lines": lines, "annotations": annotations})
            advance(len(samples))


def _batch_record(work: Path, start: int) -> Path:
    return work / BATCHES / f"{start:07d}.json"


def _merge(cfg: SampleConfig, spec: LabelSpec, shards: Path, work: Path, starts: Sequence[int]) -> None:
    """samples.jsonl and (panoptic) the predictions JSON from the batch records in order; grid.png of the first
    records' images over their predictions."""
    done = [json.loads(_batch_record(work, start).read_text()) for start in starts]
    lines = [line for batch in done for line in batch["lines"]]
    with open(work / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    if spec.task == "panoptic":
        artifacts.write_json_atomic(work / PREDICTIONS, {"annotations": [a for b in done for a in b["annotations"]]})
    shutil.rmtree(work / BATCHES)
    images, _, _ = next(ordered_batches(shards, cfg.split, spec, cfg.columns, cfg.columns))  # (n, 3, H, W) uint8
    pairs = np.stack([np.stack([image.permute(1, 2, 0).numpy(), np.asarray(Image.open(work / line["file"]))])
                      for image, line in zip(images, lines)])  # (n, [image, prediction], H, W, 3)
    image_grid(pairs.transpose(1, 0, 2, 3, 4).reshape(-1, *pairs.shape[2:]), columns=len(pairs),
               min_side=64).save(work / "grid.png")


def _contents(cfg: SampleConfig, gen: GeneratorContents, labels: Any, count: int, image_size: int,
              categories: list[dict[str, Any]] | None, processes: int) -> dict[str, Any]:
    how = (f"beam search ({cfg.givt.beams} beams, {cfg.givt.fans} fans)" if cfg.givt.beam_search else "ancestral")
    kind = "UViM VQ baseline" if gen.image_vocab else "GIVT"
    return SamplesContents(
        task="dense", generator=gen.generator, count=count, image_size=image_size, candidates=1, rerank=None,
        extra={"dense_task": labels.task, "bottleneck": labels.bottleneck, "split": cfg.split, "grid": "grid.png",
               "processes": processes,
               **({"predictions": PREDICTIONS, "categories": categories} if labels.task == "panoptic" else {}),
               "summary": f"{count} {labels.task} maps of the '{cfg.split}' split from {kind} ({how}, "
                          f"t = {cfg.givt.temperature})"},
    ).to_dict()
