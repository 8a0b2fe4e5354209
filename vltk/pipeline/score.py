"""`vltk score`: metrics of a samples artifact: caption metrics, the shapes judge, FID / IS and CLIP score.

    vltk score build/demo/samples-t2i build/demo/scores-t2i       # judge: do the images show what the prompts say?
    vltk score build/demo/samples-i2t build/demo/scores-i2t       # BLEU / METEOR / ROUGE-L / CIDEr + the judge
    vltk score build/coco/samples-t2i build/coco/scores-t2i --set clip_arch=ViT-B-32-quickgelu \
        --set inception_weights=weights-inception-2015-12-05-6726825d.pth --set clip_weights=open_clip_model.safetensors
    accelerate launch --num_processes 8 -m vltk score build/coco/samples-t2i build/coco/scores-t2i --set ...
    vltk score build/demo/samples-uvim-panoptic build/demo/scores-uvim-panoptic   # dense: vltk.pipeline.score_dense

By task:
- t2i, inpaint: the judge reads each image back into shapes and checks its prompt (whole caption, count, shape,
  colour, size, position), over all prompts and separately over those holding a held-out colour-shape pair ("heldout")
  and the others ("seen", the combinations training saw);
- i2t, infill: caption metrics (pycocoevalcap, every reference caption of the image) and the judge on each generated
  caption against its image;
- joint: the judge on each completed caption against its completed image (do the two completions agree?), and caption
  metrics where the rows hold references (the val records', not hand-written prompts');
- it2it: the judge on each generated caption against its own generated image (do the pairs agree?).
The judge applies to the built-in shapes data; elsewhere its parse rate says it read no caption, and only the caption
metrics count.

With `inception_weights` (torch-fidelity's Inception-v3, `vltk.metrics.fid`), the tasks that generate images (t2i,
inpaint, joint, it2it) get "images": FID against the real images behind the samples and IS (`is_splits` chunks), with
the sample count, the reference set and the extractor (which resizes every image to 299 px itself, as for published
numbers). The real set is read from the shards that the generator's encoded data was made from, in the sampled split:
the records of the samples' keys (t2i on the val captions is the COCO-30k protocol of kakaobrain/magvlt's eval_t2i.py:
N generated images against those N real images), or for it2it the split's first records, as many as there are samples.
Hand-written prompts (`vltk sample --prompt`) have no real images: FID is unavailable there, IS is not. Re-ranked
samples (rows with "first_file") get "images" for the kept images and "images_first" for candidate 0's, the numbers
without re-ranking (the official eval_t2i.py reports both).

With `clip_weights` (an open_clip state dict of `clip_arch`, `vltk.metrics.clip`) every task gets "CLIP score": the mean
cosine (MAGVLT's convention) and torchmetrics' CLIPScore of each image with a text (`CLIP_PAIRS`): the prompt (t2i,
inpaint; candidate 0's image too when re-ranked); the generated caption, candidate 0's when re-ranked, and the first
reference caption, for comparison (i2t, infill); the pair's own caption (it2it); the completed caption, candidate 0's
too when re-ranked (joint). Without weights, FID / IS and CLIP score say "unavailable", never a number. The artifact
holds `metrics.json` and a self-contained `report.html` (the headline numbers, the judge per attribute as a bar chart,
the samples with their prompts or captions and the judge's verdict on each, the full metric table, the tokenizer's
reconstructions and the generator's loss curves, and the provenance chain); the manifest repeats the metrics.

Under `accelerate launch` (or torchrun) each process reads its contiguous share of the rows (and of the real images)
through the judge, the Inception and CLIP, and the shares are gathered in order, so FID, IS and CLIP score see every
image as one process would; caption metrics, the report and the artifact are the main process's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, cast

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from vltk import artifacts, handles
from vltk.config import require_range
from vltk.data.images import read_rgb
from vltk.data.schema import Shape, read_jsonl
from vltk.data.shards import decode_image, iter_samples
from vltk.errors import VltkError
from vltk.metrics.captions import caption_metrics
from vltk.metrics.judge import Verdict, check, detect, parse_caption, summarize
from vltk.metrics.report import Reading, write_report
from vltk.pipeline import score_dense
from vltk.records import SamplesContents, Stage
from vltk.train.launch import begin_shared, main_progress, share

STAGE = Stage.SCORE
REPORT = "report.html"
CAPTION_TASKS = ("i2t", "infill", "joint")  # caption metrics, where the rows hold references
IMAGE_TASKS = ("t2i", "inpaint", "joint", "it2it")  # the tasks that generate images: FID and IS
# What CLIP compares, by task: (name, the row's image field, the row's text field; "reference": the first reference).
CLIP_PAIRS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "t2i": (("image_vs_prompt", "file", "prompt"), ("first_vs_prompt", "first_file", "prompt")),
    "i2t": (("image_vs_caption", "file", "caption"), ("image_vs_first_caption", "file", "first_caption"),
            ("image_vs_reference", "file", "reference")),
    "it2it": (("image_vs_caption", "file", "caption"),),
    "joint": (("image_vs_caption", "file", "caption"), ("first_vs_first_caption", "first_file", "first_caption")),
}
CLIP_PAIRS["inpaint"], CLIP_PAIRS["infill"] = CLIP_PAIRS["t2i"], CLIP_PAIRS["i2t"]
# The fields of a samples.jsonl row that scoring reads (vltk.pipeline.sample writes them), checked as the rows are read
# so that a damaged file is one error naming its line. A t2i or inpaint row also needs its prompt (the judge reads it).
ROW = Shape({"index": int, "file": str, "caption": (str, None)},
            optional={"prompt": (str, None), "key": str, "references": list[str], "first_file": str,
                      "first_caption": (str, None)})
PROMPTED_ROW = Shape({**ROW.required, "prompt": (str, None)}, optional=ROW.optional)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    meteor: bool = True  # needs Java; ~8 s to start
    spice: bool = False  # needs the Stanford CoreNLP 3.6.0 jars in pycocoevalcap's spice/lib (no download offline)
    inception_weights: str | None = None  # torch-fidelity's weights-inception-2015-12-05-6726825d.pth: FID and IS
    is_splits: int = 10  # Inception Score chunks (the standard 10)
    clip_weights: str | None = None  # an open_clip state dict: CLIP score
    clip_arch: str = "ViT-B-32-quickgelu"  # open_clip name; OpenAI's ViT-B/32 (the paper's) uses QuickGELU
    batch_size: int = 50  # images per Inception or CLIP forward pass

    def __post_init__(self) -> None:
        require_range(self, "is_splits", "batch_size")


def judge_each(rows: list[dict[str, Any]], root: Path, caption_field: str,
               state: PartialState | None = None) -> list[Reading]:
    """The judge on each row: its verdict on the row's caption (`prompt` or `caption`) and the objects it read in the
    row's image (with `state`, each process reads its share of the rows; every process gets all readings)."""
    if state is not None:
        part = share(state, len(rows))
        return gather_object(judge_each(rows[part.start:part.stop], root, caption_field))
    readings = []
    for row in rows:
        found = detect(np.asarray(read_rgb(root / row["file"])))
        caption = row[caption_field] or ""
        readings.append((check(caption, parse_caption(caption), found), found))
    return readings


def accuracies(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> dict[str, Any]:
    """The judge's accuracies over the rows' verdicts: overall, and, where the rows say whether they hold a held-out
    colour-shape combination, on the held-out rows and on the others ("seen")."""
    groups: dict[str, list[Verdict]] = {"all": [], "seen": [], "heldout": []}
    for row, verdict in zip(rows, verdicts, strict=True):
        groups["all"].append(verdict)
        if "heldout" in row:
            groups["heldout" if row["heldout"] else "seen"].append(verdict)
    return {name: _rounded(summarize(verdicts)) for name, verdicts in groups.items()
            if verdicts or name == "all"}


def judge(rows: list[dict[str, Any]], root: Path, caption_field: str) -> dict[str, Any]:
    """The judge's accuracies (`accuracies`) of each row's caption against its image (`judge_each`)."""
    return accuracies(rows, [verdict for verdict, _ in judge_each(rows, root, caption_field)])


def _rounded(summary: dict[str, float | int]) -> dict[str, float | int]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}


def _pixels(files: Iterable[Path]) -> Iterator[np.ndarray]:
    return (np.asarray(read_rgb(file)) for file in files)  # (H, W, 3) uint8 each


@dataclasses.dataclass(frozen=True)
class RealSet:
    """Where the real images behind the samples are: `keys` of `split` in `shards`, or (keys None) its first `count`."""

    shards: Path
    split: str
    keys: frozenset[str] | None
    count: int

    def images(self, part: range | None = None) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 images, streamed in shard order (only those of `part`, their places in that order, are
        decoded); an error if a key is missing."""
        part = range(self.count) if part is None else part
        found = 0
        for sample in iter_samples(self.shards, self.split):
            if found == self.count:
                return
            if self.keys is None or sample.key in self.keys:
                found += 1
                if found - 1 in part:
                    yield np.asarray(decode_image(sample))  # (H, W, 3) uint8
        if self.keys is not None and found < self.count:
            raise VltkError(f"{self.count - found} of the samples' records are not in the '{self.split}' split of "
                            f"{self.shards}")


def real_set(samples: Path, manifest: dict[str, Any], rows: list[dict[str, Any]]) -> RealSet | str:
    """The real images behind the samples (`manifest`: theirs), or why there are none: the records the rows name by key
    (t2i, inpaint), or the first as many records of the sampled split (it2it, whose rows name none)."""
    task, split = SamplesContents.from_manifest(manifest, samples).task, manifest["config"]["split"]
    keyed = [row["key"] for row in rows if "key" in row]
    if task != "it2it" and len(keyed) < len(rows):
        return "unavailable: the prompts were given by hand, so there are no real images to compare with"
    try:
        shards = artifacts.upstream(samples, "generator", "encoded", "shards")
        artifacts.open_artifact(shards, Stage.SHARD)
    except VltkError as err:
        raise VltkError(f"FID needs the real images behind {samples}: {err}") from None
    keys = frozenset(keyed) if task != "it2it" else None
    return RealSet(shards, split, keys, len(keys) if keys is not None else len(rows))


def image_metrics(cfg: ScoreConfig, samples: Path, manifest: dict[str, Any], rows: list[dict[str, Any]],
                  state: PartialState) -> dict[str, Any]:
    """{"images": FID / IS of the samples' images, "images_first": of candidate 0's when the rows were re-ranked}.
    Each process passes its share of the images through the Inception; the statistics use all of them."""
    if cfg.inception_weights is None:
        return {"images": "unavailable: no inception_weights given"}
    from vltk.metrics.fid import EXTRACTOR, InceptionFeatures, fid, inception_features, inception_score, load_inception

    reference = real_set(samples, manifest, rows)
    weights = Path(cfg.inception_weights)
    net = load_inception(weights, state.device)

    def features(images: Callable[[range], Iterable[np.ndarray]], count: int, what: str) -> InceptionFeatures:
        """The features of `count` images, joined over the processes; each passes `images(part)`, its share."""
        part = share(state, count)
        with main_progress(state, f"inception: {what}", len(part), "image") as advance:
            mine = inception_features(net, images(part), cfg.batch_size, advance)
        parts = gather_object([mine])
        return InceptionFeatures(torch.cat([p.pool for p in parts]), torch.cat([p.logits for p in parts]))

    real = features(reference.images, reference.count, "real images") if isinstance(reference, RealSet) else None
    fields = {"images": "file", **({"images_first": "first_file"} if all("first_file" in r for r in rows) else {})}
    result: dict[str, Any] = {}
    for name, field in fields.items():
        fake = features(lambda part: _pixels(samples / row[field] for row in rows[part.start:part.stop]),
                        len(rows), name)
        if real is None:
            fid_value: float | str = reference
        elif len(fake.pool) < 2 or len(real.pool) < 2:
            fid_value = f"unavailable: FID needs 2 images a side, got {len(fake.pool)} and {len(real.pool)}"
        else:
            fid_value = round(fid(fake.pool, real.pool), 4)
        inception = (_rounded(inception_score(fake.logits, cfg.is_splits)) if len(rows) >= cfg.is_splits else
                     f"unavailable: {len(rows)} images, fewer than is_splits = {cfg.is_splits}")
        result[name] = {"FID": fid_value, "IS": inception, "n": len(rows),
                        "reference": ({"shards": str(reference.shards), "split": reference.split,
                                       "images": len(real.pool)} if real is not None else None),
                        "inception_weights": weights.name, "extractor": EXTRACTOR}
    return result


def _text(row: dict[str, Any], field: str) -> str | None:
    if field == "reference":
        return row["references"][0] if row.get("references") else None
    return row.get(field)


def clip_metrics(cfg: ScoreConfig, task: str, samples: Path, rows: list[dict[str, Any]], state: PartialState
                 ) -> dict[str, Any] | str:
    """The CLIP score of each image-text pairing of the task (`CLIP_PAIRS`) that the rows hold (each process embeds its
    share of the pairs)."""
    if cfg.clip_weights is None:
        return "unavailable: no clip_weights given"
    from vltk.metrics.clip import clip_score, clip_similarity, load_clip

    clip = load_clip(Path(cfg.clip_weights), cfg.clip_arch, state.device)
    result: dict[str, Any] = {"arch": cfg.clip_arch, "clip_weights": Path(cfg.clip_weights).name}
    for name, image_field, text_field in CLIP_PAIRS[task]:
        pairs = [(samples / row[image_field], _text(row, text_field)) for row in rows
                 if image_field in row and _text(row, text_field) is not None]
        if not pairs:
            continue
        part, similarity = share(state, len(pairs)), [torch.zeros(0)]
        mine = pairs[part.start:part.stop]
        with main_progress(state, f"CLIP: {name}", len(mine), "pair") as advance:
            for start in range(0, len(mine), cfg.batch_size):
                batch = mine[start:start + cfg.batch_size]
                similarity.append(clip_similarity(clip, [read_rgb(file) for file, _ in batch],
                                                  [t for _, t in batch]).float().cpu())
                advance(len(batch))
        joined = torch.cat(gather_object([torch.cat(similarity)]))
        result[name] = {**_rounded(clip_score(joined)), "n": len(pairs)}
    return result


def run(cfg: ScoreConfig, samples: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Score the samples at `samples` into the artifact `out` (on every process of an `accelerate launch`: the judge,
    Inception and CLIP passes are shared; caption metrics, the report and the artifact are the main process's)."""
    samples, out = Path(samples), Path(out)
    state = PartialState(cpu=cpu)
    artifact = cast(handles.Samples, handles.load(samples, Stage.SAMPLE))
    manifest, contents = artifact.manifest, artifact.record
    task = contents.task
    if task == "dense":  # UViM's label maps
        return score_dense.run(cfg, samples, out, force=force, cpu=cpu)
    rows = read_rows(samples, task)
    if not rows:
        raise VltkError(f"{samples} holds no samples")
    weights = {name: Path(path) for name, path in (("inception", cfg.inception_weights), ("clip", cfg.clip_weights))
               if path is not None}
    for name, path in weights.items():  # before anything runs, and so that the manifest fingerprints them
        if not path.is_file():
            raise VltkError(f"{name} weights not found: {path}")
    job = begin_shared(state, out, stage=STAGE, config=cfg, inputs={"samples": samples, **weights}, force=force)
    if job is None:
        return out
    metrics: dict[str, Any] = {"task": task, "generator": contents.generator, "count": len(rows)}
    field = "prompt" if task in ("t2i", "inpaint") else "caption"
    # Re-ranked samples: the judge and caption metrics also for candidate 0, the numbers without re-ranking.
    first = [{**r, "file": r.get("first_file", r["file"]), "caption": r.get("first_caption", r["caption"])}
             for r in rows] if any("first_file" in r or "first_caption" in r for r in rows) else None
    readings: dict[str, list[Reading]] = {}  # by suffix: the report shows the kept samples' ("") beside each
    for suffix, scored in (("", rows), ("_first", first)):
        if scored is None:
            continue
        if task in CAPTION_TASKS and state.is_main_process and any(r.get("references") for r in scored):
            metrics["captions" + suffix] = _captions(cfg, scored)
        readings[suffix] = judge_each(scored, samples, field, state)
        metrics["judge" + suffix] = accuracies(scored, [verdict for verdict, _ in readings[suffix]])
    if task in IMAGE_TASKS:
        metrics.update(image_metrics(cfg, samples, manifest, rows, state))
    metrics["CLIP score"] = clip_metrics(cfg, task, samples, rows, state)
    if state.is_main_process:
        artifacts.write_json_atomic(job.work / "metrics.json", metrics)
        write_report(job.work / REPORT, metrics, samples, rows, artifacts.provenance(samples), readings[""])
        job.publish({**metrics, "report": REPORT, "summary": _summary(metrics)})
    state.wait_for_everyone()
    return out


def read_rows(samples: Path, task: str) -> list[dict[str, Any]]:
    """The rows of a samples artifact's samples.jsonl; a damaged one is a VltkError naming the file and the line."""
    return read_jsonl(samples / "samples.jsonl", PROMPTED_ROW if task in ("t2i", "inpaint") else ROW)


def _captions(cfg: ScoreConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Caption metrics of the rows' captions against all their references (rows without references are skipped)."""
    scored = [row for row in rows if row.get("references")]
    return caption_metrics({str(r["index"]): r["references"] for r in scored},
                           {str(r["index"]): r["caption"] for r in scored}, meteor=cfg.meteor, spice=cfg.spice)


def _summary(metrics: dict[str, Any]) -> str:
    parts = [f"{metrics['count']} {metrics['task']} samples of {metrics['generator']}"]
    if "captions" in metrics:
        parts.append(f"CIDEr {metrics['captions']['CIDEr']:.3f}, BLEU-4 {metrics['captions']['BLEU-4']:.3f}")
    overall = metrics["judge"]["all"]
    if overall.get("parsed"):
        parts.append(f"judge {overall['whole']:.1%} whole-caption (shape {overall['shape']:.0%}, colour "
                     f"{overall['color']:.0%}, position {overall['position']:.0%})")
        groups = metrics["judge"]
        if "seen" in groups and "heldout" in groups:
            parts.append(f"{groups['seen']['whole']:.1%} on seen colour-shape combinations, "
                         f"{groups['heldout']['whole']:.1%} on held-out ones")
        if "judge_first" in metrics:
            parts.append(f"without re-ranking {metrics['judge_first']['all']['whole']:.1%}")
    images = metrics.get("images")
    if isinstance(images, dict) and isinstance(images["FID"], float):
        parts.append(f"FID {images['FID']:.2f}")
    if isinstance(images, dict) and isinstance(images["IS"], dict):
        parts.append(f"IS {images['IS']['mean']:.2f}")
    clip = metrics["CLIP score"]
    first = next((v for v in clip.values() if isinstance(v, dict)), None) if isinstance(clip, dict) else None
    if first is not None:
        parts.append(f"CLIP cosine {first['cosine']:.4f}")
    return ", ".join(parts)
