"""The in-memory generation core that `vltk sample` and the Python API share: batching, seeding, the per-task
dispatch to the samplers, joint prompts' [bracketed] spans, and turning tokens into pictures (decode, inpainting's
blend, grids).

    cfg = GenerateConfig(task="t2i", seed=0, magvlt=MAGVLTSampling(image_steps=12))
    check_task(kind, cfg.task, model_config)                  # one line when the generator cannot do the task
    codes, text = generate(model, kind, queries, cfg, eos_id, grid, device)   # (B, N) codes or None, (B, C) or None
    pixels = render(image_tok, codes, grid)                    # (B, 3, H, W) in [-1, 1]

Seeds: the queries are drawn in batches of `batch_size`, and a batch's generator is seeded with `seed` + the index of
its first query, so a run repeats exactly for a given batch size whichever process draws a batch (`draw_batches`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch

from vltk.config import require_range
from vltk.data.images import to_uint8
from vltk.data.sources import clean_caption
from vltk.errors import VltkError
from vltk.masking import span_mask
from vltk.sampling import argvlt as ar
from vltk.sampling import givt as gv
from vltk.sampling import magvlt as mg
from vltk.text.bpe import WORD_END, BPETokenizer

SampleTask = Literal["t2i", "i2t", "it2it", "inpaint", "infill", "joint", "class", "dense"]
TASKS: dict[str, tuple[str, ...]] = {  # which generator does which task
    "magvlt": ("t2i", "i2t", "it2it", "inpaint", "infill", "joint"),
    "argvlt": ("t2i", "i2t", "inpaint"),
    "givt-causal": ("t2i", "class"),
    "givt-maskgit": ("t2i", "class"),
    "givt-uvim": ("dense",),  # UViM: label maps given images (vltk.pipeline.sample_dense)
}
IMAGE_TASKS = ("t2i", "inpaint", "it2it", "joint", "class")  # the tasks that generate the image
TEXT_TASKS = ("i2t", "infill", "it2it", "joint")  # the tasks that generate the caption
BLENDED_TASKS = ("inpaint", "joint")  # the tasks whose generated block is blended into the source image
UNGUIDED = {"it2it": "it2it pairs are unconditional: there is no condition to guide by",
            "joint": "joint decodes both modalities: there is no one condition to drop and guide by"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """What in-memory generation needs: the task, the seed of the first batch, the batch size and every sampler knob
    (`magvlt.*`, `argvlt.*`, `givt.*`, with the papers' defaults). `vltk sample`'s config extends it."""

    task: SampleTask = "t2i"
    batch_size: int = 32
    seed: int = 0
    magvlt: mg.MAGVLTSampling = dataclasses.field(default_factory=mg.MAGVLTSampling)
    argvlt: ar.ARGVLTSampling = dataclasses.field(default_factory=ar.ARGVLTSampling)
    givt: gv.GIVTSampling = dataclasses.field(default_factory=gv.GIVTSampling)

    def __post_init__(self) -> None:
        require_range(self, "batch_size")
        if self.magvlt.guidance > 0 and self.task in UNGUIDED:
            raise ValueError(f"{UNGUIDED[self.task]} (magvlt.guidance = 0)")


def check_task(kind: str, task: str, model_config: dict[str, Any]) -> None:
    """One line when a `kind` generator with `model_config` (its manifest's) cannot do `task`: the task table, and a
    GIVT's condition (captions for t2i, class labels for class) must be one it was trained on."""
    if task not in TASKS[kind]:
        raise VltkError(f"{kind} cannot do {task} (it does {', '.join(TASKS[kind])})")
    if kind in ("givt-causal", "givt-maskgit"):
        conditions = {"t2i": ("captions", model_config["text_tokens"]),
                      "class": ("class labels", model_config["num_classes"])}
        if not conditions[task][1]:
            raise VltkError(f"this {kind} was not trained on {conditions[task][0]}: it cannot do {task}")


def check_prompts(prompts: Sequence[str]) -> None:
    """A one-line error naming the first prompt without text (only spaces or control characters): `vltk shard` skips
    such captions, so no generator learnt from one."""
    for i, prompt in enumerate(prompts):
        if not clean_caption(prompt):
            raise VltkError(f"prompt {i + 1} of {len(prompts)} ({prompt!r}) is empty: a prompt needs some text")


def split_brackets(caption: str) -> list[tuple[str, bool]]:
    """The non-empty parts of a caption in order, each with whether it lay in [brackets]:
    "a small [red circle] above" -> [("a small ", False), ("red circle", True), (" above", False)].
    ValueError on an empty, nested or unbalanced pair."""
    parts = re.split(r"\[([^\[\]]*)\]", caption)  # odd places: the bracketed texts
    for k, part in enumerate(parts):
        if k % 2 and not part.strip():
            raise ValueError("[] encloses no words")
        if "[" in part or "]" in part:
            raise ValueError("its brackets are unbalanced or nested")
    return [(part, bool(k % 2)) for k, part in enumerate(parts) if part]


def bracket_spans(tokenizer: BPETokenizer, captions: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(C,) caption row (`encode_batch`'s, the brackets dropped) and (C,) bool span of each caption: the tokens of its
    [bracketed] words, which the joint task regenerates at their token count. One-line VltkError naming the first
    caption without brackets, with brackets that cut a word (BPE would tokenize the word differently whole) or longer
    than the context."""
    out = []
    for i, caption in enumerate(captions):
        culprit = f"prompt {i + 1} of {len(captions)} ({caption!r})"
        try:
            parts = split_brackets(caption)
        except ValueError as err:
            raise VltkError(f"{culprit}: {err}") from None
        if not any(inside for _, inside in parts):
            raise VltkError(f"{culprit} has no [bracketed] words: joint regenerates the words in brackets, e.g. "
                            "'a small [red circle] above a blue square'")
        plain = "".join(text for text, _ in parts)
        pieces, ids = [tokenizer.encode(text) for text, _ in parts], tokenizer.encode(plain)
        if sum(pieces, []) != ids:
            raise VltkError(f"{culprit}: brackets must enclose whole words")
        if len(ids) > tokenizer.context_length:
            raise VltkError(f"{culprit} has {len(ids)} tokens; the generator reads {tokenizer.context_length}")
        span = np.zeros(tokenizer.context_length, dtype=bool)
        span[:len(ids)] = [inside for (_, inside), piece in zip(parts, pieces) for _ in piece]
        out.append((tokenizer.encode_batch([plain])[0], span))
    return out


def bracketed(tokenizer: BPETokenizer, row: np.ndarray, span: np.ndarray) -> str:
    """The caption of a (C,) row with the tokens of the (C,) bool `span` in [brackets] (a joint sample's prompt)."""
    is_eos = row == tokenizer.eos_id
    n = int(is_eos.argmax()) if is_eos.any() else len(row)  # the tokens before the EOS
    text = ""
    for inside, run in itertools.groupby(range(n), key=lambda k: bool(span[k])):
        ids = [int(row[k]) for k in run]
        text += f"[{tokenizer.decode(ids)}]" if inside else tokenizer.decode(ids)
        text += " " if tokenizer.tokens[ids[-1]].endswith(WORD_END) else ""  # a word ends here
    return text.rstrip(" ")


@dataclasses.dataclass(frozen=True)
class Query:
    """One thing to sample for: a caption row and/or an image's codes (none for it2it pairs), the class of a
    class-conditional GIVT, the caption tokens that joint regenerates, and what the stage lists beside the result
    (`about`: prompt, key, references, ...)."""

    text: np.ndarray | None  # (C,) MAGVLT row
    codes: np.ndarray | None  # (N,) raster codes
    about: dict[str, Any]
    label: int | None = None  # the class (class-conditional GIVT)
    span: np.ndarray | None = None  # (C,) bool: the caption tokens joint regenerates


def long_rows(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays).astype(np.int64)).to(device)


def givt_condition(model: torch.nn.Module, queries: list[Query], eos_id: int, device: torch.device
                   ) -> dict[str, torch.Tensor | None]:
    """The labels / text / text_len a GIVT is conditioned on, for a batch of queries."""
    cfg = model.cfg
    text = long_rows([q.text for q in queries], device) if cfg.text_tokens else None
    return {"labels": torch.tensor([q.label for q in queries], device=device) if cfg.num_classes else None,
            "text": text, "text_len": mg.window_lengths(text, eos_id) if text is not None else None}


def sample_batch(model: torch.nn.Module, generator_kind: str, task: str, queries: list[Query], cfg: GenerateConfig,
                 eos_id: int, grid: int, generator: torch.Generator, device: torch.device,
                 stats: dict[str, float] | None = None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(generated codes (B, N) or None, generated text rows (B, C) or None, the inpainted region (B, N) or None).
    GIVT's "codes" are (B, N, d) latents for the VAE; its DB-CFG acceptance rates are added up in `stats`."""
    if generator_kind.startswith("givt"):
        with torch.no_grad():
            z, info = gv.sample(model, cfg.givt, batch=len(queries), generator=generator,
                                **givt_condition(model, queries, eos_id, device))
            if stats is not None and "acceptance" in info:
                stats["acceptance"] = stats.get("acceptance", 0.0) + info["acceptance"]
                stats["guided_batches"] = stats.get("guided_batches", 0) + 1
            return model.unadapt(z), None, None
    magvlt = generator_kind == "magvlt"
    text = long_rows([q.text for q in queries], device) if queries[0].text is not None else None
    codes = long_rows([q.codes for q in queries], device) if queries[0].codes is not None else None
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
        region = inpaint_region(grid, len(queries), device)
        if magvlt:
            out = mg.generate_images(model, text, lengths, cfg.magvlt, generator, image=codes, masked=region)
        else:
            out = ar.inpaint(model, codes, region, text, cfg.argvlt, generator)
        return out, None, region
    if task == "infill":
        return None, mg.generate_text(model, codes, cfg.magvlt, generator, eos_id=eos_id, text=text,
                                      masked=central_span(lengths, text.shape[1])).ids, None
    if task == "joint":
        region, span = inpaint_region(grid, len(queries), device), torch.from_numpy(np.stack([q.span for q in queries]))
        out, captions = mg.generate_joint(model, codes, region, text, span.to(device), cfg.magvlt, generator,
                                          eos_id=eos_id)
        return out, captions.ids, region
    pairs_codes, captions = mg.generate_pairs(model, len(queries), cfg.magvlt, generator, eos_id=eos_id)
    return pairs_codes, captions.ids, None


def draw_batches(model: torch.nn.Module, generator_kind: str, draws: list[Query], cfg: GenerateConfig, eos_id: int,
                 grid: int, device: torch.device, stats: dict[str, float] | None = None,
                 starts: Sequence[int] | None = None) -> Iterator[tuple[list[Query], int, torch.Generator, tuple]]:
    """`sample_batch` over `draws` in batches of cfg.batch_size, each with its own generator seeded by cfg.seed + the
    index of its first draw (the rule that makes runs repeatable, whichever process draws a batch): (batch, seed, its
    generator, sample_batch's out). `starts`: the first draws of the batches to draw (default: all of them)."""
    for start in range(0, len(draws), cfg.batch_size) if starts is None else starts:
        batch, seed = draws[start:start + cfg.batch_size], cfg.seed + start
        generator = torch.Generator(device).manual_seed(seed)
        yield batch, seed, generator, sample_batch(model, generator_kind, cfg.task, batch, cfg, eos_id, grid,
                                                   generator, device, stats)


def to_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """What the image tokenizer decodes: (B, N) codes -> (B, h, w); (B, N, d) latents -> (B, d, h, w)."""
    if tokens.is_floating_point():
        return tokens.transpose(1, 2).reshape(len(tokens), -1, grid, grid)
    return tokens.view(-1, grid, grid)


def render(image_tok: torch.nn.Module, codes: torch.Tensor, grid: int, sources: torch.Tensor | None = None,
           region: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, H, W) pixels in [-1, 1] of (B, N) codes or (B, N, d) latents; for inpainting, the generated (B, N) bool
    `region` blended into the decoded (B, N) `sources` along its boundary (MaskGIT's composite)."""
    with torch.inference_mode():
        images = image_tok.decode(to_grid(codes, grid)).float().clamp(-1, 1)
        if region is not None:
            source = image_tok.decode(to_grid(sources, grid)).float().clamp(-1, 1)
            images = mg.blend(images, source, region, grid)
    return images


def central_span(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool: infilling's span of captions of (B,) n_txt, the central floor(n / 2) of the n = n_txt - 1
    tokens before the EOS (`mg.infill_span`)."""
    start_count = [mg.infill_span(int(n) - 1) for n in lengths.tolist()]
    starts = torch.tensor([s for s, _ in start_count], device=lengths.device)
    return span_mask(starts, starts + torch.tensor([c for _, c in start_count], device=lengths.device), size)


def inpaint_region(grid: int, batch: int, device: torch.device) -> torch.Tensor:
    """(B, N) bool: the tokens `inpaint` regenerates, the central block of side grid // 2 (`mg.center_box`)."""
    return mg.center_box(grid).to(device).expand(batch, -1)


def pictures(image_tok: torch.nn.Module, tokens: torch.Tensor, grid: int, task: str, queries: list[Query],
             device: torch.device) -> np.ndarray:
    """(B, H, W, 3) uint8 pictures of the (B, N) codes or (B, N, d) latents of `queries`; for `inpaint` and `joint`, the
    generated block blended into each item's source image (`render`)."""
    sources = region = None
    if task in BLENDED_TASKS:
        sources, region = long_rows([q.codes for q in queries], device), inpaint_region(grid, len(queries), device)
    return to_uint8(render(image_tok, tokens, grid, sources, region))


def generate(model: torch.nn.Module, kind: str, queries: list[Query], cfg: GenerateConfig, eos_id: int, grid: int,
             device: torch.device) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """(codes (B, N), GIVT's latents (B, N, d) or None; text rows (B, C) or None) of every query, on the CPU, batch by
    batch exactly as `vltk sample` draws them."""
    codes, text = [], []
    for _, _, _, (out_codes, out_text, _) in draw_batches(model, kind, queries, cfg, eos_id, grid, device):
        codes += [out_codes.cpu()] if out_codes is not None else []
        text += [out_text.cpu().numpy()] if out_text is not None else []
    return (torch.cat(codes) if codes else None), (np.concatenate(text) if text else None)
