"""`vltk sample`: generate with a trained MAGVLT, ARGVLT or GIVT: text-to-image, captions, pairs, inpainting,
infilling, both at once, class-conditional images.

    vltk sample build/demo/gen build/demo/samples-t2i --task t2i                  # prompts: the val split's captions
    vltk sample build/demo/gen build/demo/samples-t2i --task t2i --prompt "a small red circle"
    vltk sample build/demo/gen build/demo/samples-i2t --task i2t --count 32       # captions for val images
    vltk sample build/demo/gen build/demo/samples-joint --task joint --prompt "a small [red circle] above a blue square"
    vltk sample build/demo/gen build/demo/samples-t2i --candidates 32             # best of 32 by the model's own score
    vltk sample build/demo/gen build/demo/samples-t2i --candidates 32 --rerank clip --clip open_clip_model.safetensors
    vltk sample build/demo/gen-givt build/demo/samples-givt-t2i --task t2i --set givt.cfg_weight=0.4
    vltk sample IMAGENET_GIVT out --task class --prompt 207 --prompt 360      # class ids (or the run's class names)
    accelerate launch --num_processes 8 -m vltk sample build/coco/gen build/coco/samples-t2i --count 30000
    vltk sample build/demo/gen-uvim-panoptic build/demo/samples-uvim-panoptic --task dense   # vltk.pipeline.sample_dense

The generator's manifest names its encoded data and tokenizers, so nothing else is given. Prompts come from `--prompt`
(repeatable) or else from the first caption of the first `count` records of the encoded artifact's `split`; images
(i2t, inpaint, infill, joint) from the same records. `inpaint` regenerates the central block of the image (a quarter of
the tokens) given the rest and the caption, then blends it into the source along the boundary; `infill` regenerates the
central half of the caption given the image and the rest of it, with the true length; `joint` (MAGVLT only) masks both
at once in one IT2IT sequence and decodes them together (`magvlt.generate_joint`), the block blended as inpaint's; with
`--prompt` it regenerates the [bracketed] words of prompt i, at their token count, over record i's image. `it2it` draws
`count` unconditional image + caption pairs (MAGVLT only). GIVT (`givt.*` keys: variance scaling, DB-CFG weight, beam
search, MaskGIT steps) does `t2i` when it was trained on captions and `class` when on class labels (prompts: class ids
or names, else the classes of the split's records); its latents are inverted through the adapter and decoded by the
beta-VAE, and with DB-CFG the manifest records the rejection sampler's acceptance rate.

Candidates (MAGVLT §4.1): with `candidates` N > 1, N images per prompt (t2i, inpaint) or N captions per image (i2t,
infill) or N completions (joint) are drawn and the one with the best score is kept (ties: the first). `rerank` "self"
scores a pair by the generator's own mean log p(caption | image) per caption token (`vltk.sampling.rerank`, no external
weights); "clip" by the cosine similarity of open_clip's embeddings (`clip_weights`, `clip_arch`; CLIP's own
preprocessing and tokenizer, `vltk.metrics.clip`), of the prompt and each image, or of each caption and the source
image as the image tokenizer reconstructs it (the encoded data keeps codes, not pixels). it2it pairs have no prompt to
re-rank for.

The artifact holds `images/{i:05d}.png` (the generated image, the best candidate, or for i2t / infill the source
image), `grid.png`, and `samples.jsonl`: index, task, prompt (joint's: the caption with the regenerated words in
brackets), caption (generated for i2t / infill / it2it, completed for joint), the record's key, all its reference
captions and, for shapes data, whether it holds a held-out colour-shape pair (for `vltk score`), the seed of the batch
that drew the kept sample, the file, "score" (the kept sample's self score with N = 1: one forward pass, cheap next to
sampling), "rerank" (null with N = 1) and "candidates". With N > 1 a row also holds "candidate" (the kept one's index)
and "scores" (all N, in drawing order), and candidate 0 is kept beside the best, so that scores can be compared without
re-ranking: `first/{i:05d}.png` and "first_file" for t2i / inpaint / joint, "first_caption" for i2t / infill / joint.
Every knob of the samplers is a config key (`magvlt.*`, `argvlt.*`) with the paper's default.

Seeds: candidates are drawn in batches of `batch_size` over the prompts each repeated N times (item i's candidate k is
draw i * N + k), and a batch's generator is seeded with `seed` + the index of its first draw (with N = 1: its first
item). A run repeats exactly for a given batch size and N, whatever the number of processes.

Processes and resuming: under `accelerate launch` (or torchrun) process r of P draws batches r, r + P, ...; each batch
is written to `OUT.partial/batches/` (its tokens, then its record of captions, scores and seed) as soon as it is
drawn, and a killed run draws only the batches that are missing. When every batch is in, the main process keeps each
item's best candidate in draw order, decodes the kept pictures and publishes the artifact: the same files for 1 and P
processes. Only the tokens of the candidates are kept until then (COCO-30k with 32 candidates: ~0.5 GB of codes where
its pictures would take ~190 GB); pictures are decoded during drawing only for CLIP to score.
"""

from __future__ import annotations

import dataclasses
import itertools
import io
import json
import shutil
from pathlib import Path
from typing import Any, ContextManager, Literal, Sequence, cast

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image

from vltk import artifacts, handles
from vltk.config import require_range
from vltk.data.encoded import EncodedSample, iter_encoded
from vltk.data.images import image_grid
from vltk.data.token_batches import class_index, record_class
from vltk.errors import VltkError
from vltk.pipeline import sample_dense
from vltk.records import GeneratorContents, SamplesContents, Stage
from vltk.sampling import rerank
from vltk.sampling.magvlt import window_lengths
from vltk.sampling.generate import (
    IMAGE_TASKS, TASKS, TEXT_TASKS, GenerateConfig, Query, bracket_spans, bracketed, central_span, check_prompts,
    check_task, draw_batches, givt_condition, long_rows, pictures,
)
from vltk.text.bpe import BPETokenizer
from vltk.train import loop
from vltk.train.launch import begin_shared, main_progress
from vltk.ui import console

STAGE = Stage.SAMPLE
BATCHES = "batches"  # in the work directory: each drawn batch, until the main process keeps the best
Rerank = Literal["self", "clip"]
RERANKERS: tuple[str, ...] = ("self", "clip")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleConfig(GenerateConfig):
    """The generation knobs (task, batch_size, seed, magvlt.*, argvlt.*, givt.*) and what the stage adds: where the
    prompts come from, re-ranking, the grid and the precision."""

    prompts: tuple[str, ...] = ()  # t2i prompts, class ids / names, joint's [bracketed] captions; empty: the records
    count: int = 64  # records of the split (or it2it pairs) to sample for
    split: str = "val"
    columns: int = 8  # of grid.png
    candidates: int = 1  # drawn per prompt / image; the best by `rerank` is kept (paper: 32 images, 64 captions)
    rerank: Rerank = "self"  # "self": the generator's log p(caption | image) per token; "clip": CLIP's cosine
    self_passes: int = 1  # MAGVLT's self score: 1 = every caption token masked at once; > 1 = pseudo-log-likelihood
    clip_weights: str | None = None  # an open_clip checkpoint, for rerank = "clip"
    clip_arch: str = "ViT-B-32-quickgelu"  # open_clip name; OpenAI's ViT-B/32 (the paper's) uses QuickGELU
    # bf16 autocast for the models' passes ("auto": on a GPU only; "bf16" on a CPU too, where it has native bf16), as
    # train.mixed_precision; the samplers' math (softmax, filters, guidance, the GMM) stays float32 either way.
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range(self, "count", "columns", "candidates", "self_passes")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(f"mixed_precision must be auto, no or bf16, got {self.mixed_precision!r}")
        check_prompts(self.prompts)
        if self.rerank not in RERANKERS:
            raise ValueError(f"unknown rerank {self.rerank!r}; choose from {', '.join(RERANKERS)}")
        if self.candidates > 1 and self.task == "it2it":
            raise ValueError("it2it pairs have no prompt or image to re-rank for: candidates must be 1")
        if self.rerank == "clip" and self.clip_weights is None:
            raise ValueError("rerank = 'clip' needs open_clip weights: give --clip PATH (or clip_weights)")
        if self.rerank == "clip" and self.candidates == 1:
            raise ValueError("rerank = 'clip' picks among candidates: give --candidates N with N > 1")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One drawn sample: the tokens its picture decodes from, its caption, its re-ranking score and the seed of the
    batch that drew it."""

    tokens: np.ndarray  # (N,) codes or (N, d) latents: the generated image's, or for i2t / infill the source's
    caption: str | None
    score: float
    seed: int


def _records(encoded: Path, split: str, count: int) -> list[EncodedSample]:
    try:
        return list(itertools.islice(iter_encoded(encoded, split), count))
    except VltkError as err:
        raise VltkError(f"{err} (the generator was trained on {encoded})") from None


def gather(cfg: SampleConfig, encoded: Path, tokenizer: BPETokenizer, classes: tuple[str, ...] = (),
           class_key: str = "label") -> list[Query]:
    """What the task samples for: prompts, or the first `count` records of the split (none for it2it). With
    `classes` (a class-conditional GIVT) each item carries its class: a prompt's (for task "class"), else the
    record's `class_key` meta field."""
    if cfg.task == "it2it":
        return [Query(None, None, {}) for _ in range(cfg.count)]
    if cfg.prompts and cfg.task == "class":
        labels = [class_index(name, classes, "--prompt", name) for name in cfg.prompts]
        return [Query(None, None, {"prompt": classes[k], "label": k}, k) for k in labels]
    if cfg.prompts and cfg.task == "t2i" and not classes:
        rows = tokenizer.encode_batch(list(cfg.prompts))
        return [Query(row, None, {"prompt": prompt}) for row, prompt in zip(rows, cfg.prompts)]
    if cfg.prompts and cfg.task != "joint":
        raise VltkError(f"--prompt is for t2i (or class, or joint's [bracketed] captions); {cfg.task} samples for the "
                        f"records of the '{cfg.split}' split" +
                        (" (this generator also needs each record's class)" if classes else ""))
    records = _records(encoded, cfg.split, len(cfg.prompts) or cfg.count)
    if not records:
        raise VltkError(f"{encoded} has no records in its '{cfg.split}' split")
    if len(records) < len(cfg.prompts):
        raise VltkError(f"{len(cfg.prompts)} prompts but {len(records)} records in the '{cfg.split}' split: joint "
                        "completes prompt i over record i's image")
    items = []
    for record in records:
        label = record_class(record, classes, class_key) if classes else None
        codes = record.image["codes"].reshape(-1) if "codes" in record.image else None
        about = {"prompt": classes[label] if cfg.task == "class" else record.captions[0], "key": record.key,
                 "references": list(record.captions), **({"label": label} if label is not None else {}),
                 **({"heldout": record.meta["heldout"]} if "heldout" in record.meta else {})}
        items.append(Query(record.text[0], codes, about, label))
    return joint_queries(items, cfg.prompts, tokenizer) if cfg.task == "joint" else items


def joint_queries(items: list[Query], prompts: Sequence[str], tokenizer: BPETokenizer) -> list[Query]:
    """The records' queries made joint's: each record's image with its caption's central span masked (infilling's,
    `central_span`; its prompt shows the span in brackets), or with `prompts`, prompt i's [bracketed] words masked over
    record i's image (the record's references and held-out flag, which describe its own caption, are left out)."""
    if prompts:
        return [Query(row, item.codes, {"prompt": prompt, "key": item.about["key"]}, span=span)
                for item, prompt, (row, span) in zip(items, prompts, bracket_spans(tokenizer, prompts))]
    text = long_rows([item.text for item in items], torch.device("cpu"))
    spans = central_span(window_lengths(text, tokenizer.eos_id), text.shape[1]).numpy()  # (B, C) bool
    return [dataclasses.replace(item, span=span, about={**item.about, "prompt": bracketed(tokenizer, item.text, span)})
            for item, span in zip(items, spans)]


def score_batch(model: torch.nn.Module, cfg: SampleConfig, clip: Any, pictures: np.ndarray | None,
                codes: torch.Tensor, text: torch.Tensor, captions: list[str | None], batch: list[Query], eos_id: int,
                generator: torch.Generator) -> list[float]:
    """The re-ranking score of each sample of a batch, given its (B, H, W, 3) pictures (with `clip` only), (B, N) codes,
    (B, C) text rows and captions (None where the prompt is the caption): CLIP's cosine when `clip` is loaded, else the
    generator's mean log p(caption | image) per token."""
    if clip is not None:
        from vltk.metrics.clip import clip_similarity  # lazily: open_clip is only needed here

        texts = [caption if caption is not None else item.about["prompt"] for caption, item in zip(captions, batch)]
        return clip_similarity(clip, [Image.fromarray(p) for p in pictures], texts).float().tolist()
    if codes.is_floating_point():  # GIVT's latents
        return rerank.givt_scores(model, codes, **givt_condition(model, batch, eos_id, codes.device)).tolist()
    return rerank.self_scores(model, codes, text, eos_id=eos_id, passes=cfg.self_passes,
                              generator=generator).tolist()


def keep(index: int, item: Query, candidates: list[Candidate], cfg: SampleConfig
         ) -> tuple[dict[str, Any], Candidate, Candidate | None]:
    """Item `index`'s samples.jsonl row, its best candidate (ties: the first) and, when there are several and they are
    images, candidate 0 (shown beside the best, for the numbers without re-ranking)."""
    n = len(candidates)
    k = int(rerank.best(torch.tensor([[c.score for c in candidates]]))[0])
    chosen = candidates[k]
    line = {"index": index, "task": cfg.task, **item.about, "caption": chosen.caption, "seed": chosen.seed,
            "file": f"images/{index:05d}.png", "score": chosen.score, "rerank": cfg.rerank if n > 1 else None,
            "candidates": n}
    if n == 1:
        return line, chosen, None
    line.update(candidate=k, scores=[c.score for c in candidates])
    if cfg.task in TEXT_TASKS:
        line["first_caption"] = candidates[0].caption
    if cfg.task not in IMAGE_TASKS:
        return line, chosen, None
    line["first_file"] = f"first/{index:05d}.png"
    return line, chosen, candidates[0]


def run(cfg: SampleConfig, gen: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Sample `cfg.task` with the generator at `gen` into the artifact `out` (on every process of an `accelerate
    launch`: each draws its share of the batches, the main process writes the artifact)."""
    gen, out = Path(gen), Path(out)
    if cfg.task == "dense" or "dense" in TASKS.get(GeneratorContents.read(gen).generator, ()):  # UViM: label maps
        return sample_dense.run(cfg, gen, out, force=force, cpu=cpu)
    state = PartialState(cpu=cpu)
    device = state.device
    bundle = cast(handles.Generator, handles.load(gen, Stage.TRAIN_GEN, device=device))
    contents, kind, encoded = bundle.record, bundle.kind, bundle.encoded
    check_task(kind, cfg.task, contents.model)
    tokenizer, image_tok_artifact = bundle.text_tokenizer, bundle.image_tokenizer  # both must still be there
    items = gather(cfg, encoded, tokenizer, tuple(contents.classes or ()), contents.class_key or "label")
    # Both models load (a damaged weights file is refused) before any work is begun.
    model, image_tok = bundle.model, image_tok_artifact.model
    use_clip = cfg.rerank == "clip"  # the config guarantees candidates > 1 and weights
    inputs = {"generator": gen, **({"clip": Path(cfg.clip_weights)} if use_clip else {})}
    job = begin_shared(state, out, stage=STAGE, config=cfg, inputs=inputs, force=force, resume=True)
    if job is None:
        return out
    if state.is_main_process and job.resumed:
        console().print(f"[yellow]resuming[/] the unfinished sampling in {job.work}")
    draws = [item for item in items for _ in range(cfg.candidates)]  # item i's candidate k is draw i * n + k
    starts = range(0, len(draws), cfg.batch_size)
    (job.work / BATCHES).mkdir(exist_ok=True)
    mixed = loop.precision(cfg.mixed_precision, device.type == "cpu", key="mixed_precision")  # "no" or "bf16"
    models = Models(model, kind, contents.model["size"], contents.grid_size, image_tok, tokenizer)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=mixed == "bf16")
    _draw_share(cfg, models, state, job.work / BATCHES, draws, starts[state.process_index::state.num_processes],
                autocast)
    state.wait_for_everyone()
    if state.is_main_process:
        merged = _merge(cfg, models, job.work, items, starts, device, autocast)
        run_facts = {"processes": state.num_processes, "precision": mixed}
        job.publish(dataclasses.replace(merged, extra={**merged.extra, **run_facts}).to_dict())
    state.wait_for_everyone()
    return out


def _batch_files(folder: Path, start: int) -> tuple[Path, Path]:
    """Batch `start`'s tokens ((B, N) int32 codes or (B, N, d) float32 latents: what its pictures decode from, a few
    hundred bytes a sample where the pictures would take ~200 KB at 256 px) and its record (captions, scores, seed,
    sampler stats), which is written last: a batch is done when its record is there."""
    return folder / f"{start:07d}.npy", folder / f"{start:07d}.json"


@dataclasses.dataclass(frozen=True)
class Models:
    """What drawing a batch uses: the generator (its kind, size preset and token grid side) and the tokenizers."""

    generator: torch.nn.Module
    kind: str
    size: str
    grid: int
    image_tok: torch.nn.Module
    tokenizer: BPETokenizer


def _draw_share(cfg: SampleConfig, models: Models, state: PartialState, folder: Path, draws: list[Query],
                starts: Sequence[int], autocast: ContextManager) -> None:
    """Draw and score this process's batches (those a killed run finished are skipped) into `folder`, under
    `autocast` (bf16 or disabled)."""
    device, kind, grid, tokenizer = state.device, models.kind, models.grid, models.tokenizer
    model, eos = models.generator, tokenizer.eos_id
    clip = None
    if cfg.rerank == "clip":
        from vltk.metrics.clip import load_clip  # lazily: open_clip is only needed here

        clip = load_clip(Path(cfg.clip_weights), cfg.clip_arch, device=device)
    todo = [start for start in starts if not _batch_files(folder, start)[1].is_file()]
    unit = "candidate" if cfg.candidates > 1 else "sample"
    size = {start: len(draws[start:start + cfg.batch_size]) for start in starts}  # the last batch may be short
    with main_progress(state, f"sample {cfg.task} ({kind})", sum(size.values()), unit) as advance:
        advance(sum(size[start] for start in starts if start not in todo))
        for start in todo:  # one batch at a time, so that each is on disk before the next is drawn
            stats: dict[str, float] = {}
            with autocast:
                ((batch, seed, generator, (codes, text, _)),) = draw_batches(model, kind, draws, cfg, eos, grid,
                                                                             device, stats, starts=[start])
                shown = codes if codes is not None else long_rows([q.codes for q in batch], device)
                # The pictures: CLIP scores them; the kept ones are decoded again when they are written.
                drawn = pictures(models.image_tok, shown, grid, cfg.task, batch, device) if clip is not None else None
                captions = tokenizer.decode_batch(text.cpu().numpy()) if text is not None else [None] * len(batch)
                rows = text if text is not None or batch[0].text is None else long_rows([q.text for q in batch], device)
                scores = score_batch(model, cfg, clip, drawn, shown, rows, captions, batch, eos, generator)
            tokens, record = _batch_files(folder, start)
            kept, buffer = shown.cpu().float() if shown.is_floating_point() else shown.cpu().int(), io.BytesIO()
            np.save(buffer, kept.numpy(), allow_pickle=False)
            artifacts.write_bytes_atomic(tokens, buffer.getvalue())
            artifacts.write_json_atomic(record, {"captions": captions, "scores": scores, "seed": seed,
                                                 "stats": stats})
            advance(len(batch))


def _merge(cfg: SampleConfig, models: Models, work: Path, items: list[Query], starts: Sequence[int],
           device: torch.device, autocast: ContextManager) -> SamplesContents:
    """Keep every item's best candidate from the batch files in draw order, decode the kept pictures (cfg.batch_size
    at a time), write them, samples.jsonl and grid.png, and return what the manifest's contents say of them."""
    n, folder = cfg.candidates, work / BATCHES
    if n > 1 and cfg.task in IMAGE_TASKS:
        (work / "first").mkdir(exist_ok=True)
    (work / "images").mkdir(exist_ok=True)
    lines, kept, pending = [], [], []  # pending: the drawn candidates of items not yet kept, in draw order
    shown: list[tuple[str, Query, np.ndarray]] = []  # (file, item, tokens) of pictures not yet decoded
    stats: dict[str, float] = {}

    def decode() -> None:
        with autocast:
            tokens = torch.from_numpy(np.stack([t for _, _, t in shown])).to(device)
            drawn = pictures(models.image_tok, tokens if tokens.is_floating_point() else tokens.long(), models.grid,
                             cfg.task, [item for _, item, _ in shown], device)
        for (file, _, _), picture in zip(shown, drawn):
            Image.fromarray(picture).save(work / file)
            if file.startswith("images/"):
                kept.append(picture)
        shown.clear()

    for start in starts:
        array, record = _batch_files(folder, start)
        tokens, done = np.load(array, allow_pickle=False), json.loads(record.read_text())
        for key, value in done["stats"].items():
            stats[key] = stats.get(key, 0.0) + value
        pending += [Candidate(t, c, s, done["seed"]) for t, c, s in zip(tokens, done["captions"], done["scores"])]
        while len(pending) >= n:  # every candidate of the next item is in: keep its best
            item = items[len(lines)]
            line, chosen, first = keep(len(lines), item, pending[:n], cfg)
            lines.append(line)
            shown.append((line["file"], item, chosen.tokens))
            if first is not None:
                shown.append((line["first_file"], item, first.tokens))
            del pending[:n]
            if len(shown) >= cfg.batch_size:
                decode()
    if shown:
        decode()
    shutil.rmtree(folder)
    with open(work / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    image_grid(np.stack(kept), cfg.columns, min_side=64).save(work / "grid.png")
    best_of = f", each the best of {n} by {cfg.rerank}" if n > 1 else ""
    acceptance = None
    if stats.get("guided_batches"):
        # DB-CFG's acceptance rate: the share of drawn values for which one of the (up to 1,000) proposals was
        # accepted, the rest falling back to the conditional Gaussian (the paper: ~0.1% fall back); a batch mean.
        acceptance = round(stats["acceptance"] / stats["guided_batches"], 6)
        best_of += f", DB-CFG: {1 - acceptance:.3%} of values fell back to the conditional"
    return SamplesContents(
        task=cfg.task, generator=models.kind, count=len(lines), image_size=int(kept[0].shape[0]), candidates=n,
        rerank=cfg.rerank if n > 1 else None, acceptance=acceptance,
        extra={"grid": "grid.png",
               "summary": f"{len(lines)} {cfg.task} samples from {models.kind} {models.size}{best_of}"})
