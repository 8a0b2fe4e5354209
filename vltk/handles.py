"""Handles on finished artifacts: open any artifact by path as the handle of its stage, whose properties load what it
holds on first use; a generator's handle also generates in memory (`vltk.sampling.generate`, as `vltk sample` does).

    gen = load("build/demo/gen", "train-gen")           # a Generator
    gen.model, gen.text_tokenizer, gen.image_tokenizer   # the network, the BPE tokenizer, the image tokenizer's handle
    images = gen.text_to_image(["a small red circle"], seed=0)

The stages open their inputs through this module; `vltk.api` is the public face that re-exports it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence, cast

import numpy as np
import torch
from PIL import Image, ImageOps

from vltk import artifacts
from vltk.artifacts import MANIFEST, open_artifact, read_manifest
from vltk.data.encoded import EncodedSample
from vltk.data.encoded import MixSel, iter_encoded
from vltk.data.images import center_crop, pad, read_rgb, to_rgb, to_uint8
from vltk.data.loader import to_tensor
from vltk.data.schema import Shape, read_jsonl
from vltk.data.shards import Sample, iter_samples
from vltk.errors import VltkError
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.labeltok.artifact import load_label_tokenizer
from vltk.models.artifact import load_generator
from vltk.records import RECORDS, Contents, GeneratorContents, ImageTokenizerContents, Stage
from vltk.sampling.generate import (
    GenerateConfig, Query, bracket_spans, check_prompts, check_task, generate, pictures, to_grid,
)
from vltk.text.bpe import BPETokenizer
from vltk.train.launch import local_device

PathLike = str | Path
SAMPLE_ROW = Shape({"index": int, "file": str})  # what every samples.jsonl row holds (sample and decode)
Images = Sequence[Image.Image] | torch.Tensor | np.ndarray  # PIL images, or (B, h, w) / (B, N) integer code grids


@dataclasses.dataclass(frozen=True, eq=False)
class Artifact:
    """A finished artifact: its directory, its manifest, and the device its models load onto."""

    path: Path
    manifest: dict[str, Any]
    device: torch.device

    @property
    def stage(self) -> str:
        return self.manifest["stage"]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    @property
    def contents(self) -> dict[str, Any]:
        return self.manifest.get("contents", {})

    @functools.cached_property
    def record(self) -> Contents:
        """The typed contents (`vltk.records`) of an artifact of a stage that has a record."""
        if self.stage not in RECORDS:
            raise VltkError(f"{self.path}: a '{self.stage}' artifact has no typed record; read its `contents`")
        return RECORDS[self.stage].from_manifest(self.manifest, self.path)

    @property
    def inputs(self) -> dict[str, Path]:
        """{name: path} of every input, artifacts and raw sources alike."""
        return {name: artifacts.input_path(self.path, self.manifest, name) for name in self.manifest["inputs"]}

    def upstream(self, name: str) -> Artifact:
        """The input artifact `name` (e.g. a generator's "encoded"), opened with this handle's device."""
        entry = self.manifest["inputs"].get(name)
        if entry is not None and "hash" not in entry:
            raise VltkError(f"input '{name}' of {self.path} is a raw source ({self.inputs[name]}), not an artifact")
        return load(artifacts.upstream(self.path, name), device=self.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, stage={self.stage!r})"


class TextTokenizer(Artifact):
    """A `vltk tokenize text` artifact."""

    @functools.cached_property
    def tokenizer(self) -> BPETokenizer:
        return BPETokenizer.from_artifact(self.path)


class ImageTokenizer(Artifact):
    """A `vltk tokenize image` artifact: a VQ-GAN (codes) or a beta-VAE (Gaussian latents)."""

    @functools.cached_property
    def model(self) -> torch.nn.Module:
        return load_image_tokenizer(self.path)[0].to(self.device)

    def pixels(self, images: Sequence[Image.Image], resize: Literal["center-crop", "pad"] = "center-crop"
               ) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] on the device: each image as `vltk shard` prepares one (EXIF rotation, RGB, then
        `resize` to the tokenizer's side S)."""
        size = cast(ImageTokenizerContents, self.record).image_size
        fit = center_crop if resize == "center-crop" else pad
        return torch.stack([to_tensor(fit(to_rgb(ImageOps.exif_transpose(image)), size)) for image in images]
                           ).to(self.device)

    def encode(self, images: Sequence[Image.Image], resize: Literal["center-crop", "pad"] = "center-crop"
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """VQ-GAN: (B, h, w) long codes; beta-VAE: the posterior's (mean, logvar), each (B, d, h, w)."""
        if not len(images):
            raise VltkError("no images to encode")
        with torch.inference_mode():
            return self.model.encode(self.pixels(images, resize))

    def decode(self, tokens: torch.Tensor) -> list[Image.Image]:
        """(B, h, w) codes (VQ-GAN) or (B, d, h, w) latents (beta-VAE) -> B RGB images."""
        with torch.inference_mode():
            pixels = self.model.decode(torch.as_tensor(tokens).to(self.device))  # (B, 3, S, S) in about [-1, 1]
        return [Image.fromarray(picture) for picture in to_uint8(pixels)]


class LabelTokenizer(Artifact):
    """`vltk tokenize label`: UViM's label autoencoder (encode label maps, decode latents, predict maps)."""

    @functools.cached_property
    def model(self) -> torch.nn.Module:
        return load_label_tokenizer(self.path, self.device)[0]


class Encoded(Artifact):
    """A `vltk encode` artifact: token grids (or latents) and text ids per split."""

    def records(self, split: str = "val") -> Iterator[EncodedSample | MixSel]:
        """The records of `split` in order (MixSel pairs for a `mixsel-*` split)."""
        return iter_encoded(self.path, split)


class Shards(Artifact):
    """A `vltk shard` artifact: images and captions per split."""

    def samples(self, split: str = "val") -> Iterator[Sample]:
        return iter_samples(self.path, split)


class Samples(Artifact):
    """A `vltk sample` (or `vltk decode`) artifact: PNGs listed in samples.jsonl."""

    @functools.cached_property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per sample: index, task, prompt, caption, references, file, ... (see vltk.pipeline.sample); a
        damaged samples.jsonl is one error naming its line."""
        return read_jsonl(self.path / "samples.jsonl", SAMPLE_ROW)

    def images(self) -> list[Image.Image]:
        """The samples' images, in row order (read into memory: no file stays open)."""
        return [read_rgb(self.path / row["file"]) for row in self.rows]


class Scores(Artifact):
    """A `vltk score` artifact: metrics.json and report.html."""

    @functools.cached_property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())

    @property
    def report(self) -> Path:
        return self.path / self.contents["report"]


class Generator(Artifact):
    """A `vltk train-gen` artifact (MAGVLT, ARGVLT or GIVT) with the tokenizers it was trained with."""

    @property
    def record(self) -> GeneratorContents:
        return cast(GeneratorContents, super().record)

    @property
    def kind(self) -> str:
        return self.record.generator

    @functools.cached_property
    def model(self) -> torch.nn.Module:
        return load_generator(self.path)[0].to(self.device)

    @functools.cached_property
    def text_tokenizer(self) -> BPETokenizer:
        return BPETokenizer.from_artifact(self._tokenizer("text"))

    @functools.cached_property
    def image_tokenizer(self) -> ImageTokenizer:
        return cast(ImageTokenizer, load(self._tokenizer("image"), Stage.TOKENIZE_IMAGE, device=self.device))

    @property
    def encoded(self) -> Path:
        """The encoded artifact it was trained on (sampling takes its val records as I2T inputs and references)."""
        return artifacts.upstream(self.path, "encoded")

    def _tokenizer(self, name: str) -> Path:
        """The `name` ("image" or "text") tokenizer the generator's data was encoded with."""
        return artifacts.upstream(self.path, "encoded", f"{name}_tok")

    def text_to_image(self, prompts: Sequence[str], *, seed: int = 0, config: GenerateConfig | None = None
                      ) -> list[Image.Image]:
        """One image per prompt, decoded by the image tokenizer the generator was trained with."""
        codes, _ = self._generate("t2i", self._items(prompts=prompts), seed, config)  # (B, N), or GIVT's (B, N, d)
        return self.image_tokenizer.decode(to_grid(codes, self.record.grid_size))

    def image_to_text(self, images: Images, *, seed: int = 0, config: GenerateConfig | None = None) -> list[str]:
        """One caption per image (PIL images are encoded through the image tokenizer; code grids are used as they
        are), of the length the model predicts."""
        _, text = self._generate("i2t", self._items(images=images), seed, config)
        return self.text_tokenizer.decode_batch(text)

    def inpaint(self, images: Images, prompts: Sequence[str], *, seed: int = 0, config: GenerateConfig | None = None
                ) -> list[Image.Image]:
        """Each image with its central block (a quarter of the tokens) regenerated to fit the rest and its prompt,
        blended into the source along the boundary (MaskGIT's composite), as `vltk sample --task inpaint`."""
        items = self._items(prompts=prompts, images=images)
        codes, _ = self._generate("inpaint", items, seed, config)
        return self._blended("inpaint", codes, items)

    def infill(self, images: Images, captions: Sequence[str], *, seed: int = 0, config: GenerateConfig | None = None
               ) -> list[str]:
        """Each caption with its central half regenerated given the image and the rest, at its true length (MAGVLT)."""
        _, text = self._generate("infill", self._items(prompts=captions, images=images), seed, config)
        return self.text_tokenizer.decode_batch(text)

    def inpaint_and_infill(self, images: Images, captions: Sequence[str], *, seed: int = 0,
                           config: GenerateConfig | None = None) -> tuple[list[Image.Image], list[str]]:
        """Each image's central block and each caption's [bracketed] words ("a small [red circle] above a blue
        square", regenerated at their token count) completed together, in one sequence (MAGVLT), as `vltk sample
        --task joint --prompt`: the images blended into the sources as `inpaint`'s, and the completed captions."""
        items = [dataclasses.replace(item, text=row, span=span) for item, (row, span)  # the brackets dropped
                 in zip(self._items(prompts=captions, images=images), bracket_spans(self.text_tokenizer, captions))]
        codes, text = self._generate("joint", items, seed, config)
        return self._blended("joint", codes, items), self.text_tokenizer.decode_batch(text)

    def _blended(self, task: str, codes: torch.Tensor, items: list[Query]) -> list[Image.Image]:
        """The images of (B, N) codes with the generated block blended into each item's source (`pictures`)."""
        drawn = pictures(self.image_tokenizer.model, codes.to(self.device), self.record.grid_size, task, items,
                         self.device)
        return [Image.fromarray(picture) for picture in drawn]

    def _items(self, *, prompts: Sequence[str] | None = None, images: Images | None = None) -> list[Query]:
        """What the sample stage samples for: caption rows and/or (N,) raster codes, one item per input."""
        if isinstance(prompts, str):
            raise VltkError("prompts must be a list of strings, not one string")
        check_prompts(prompts or ())
        rows = list(self.text_tokenizer.encode_batch(list(prompts))) if prompts is not None else None
        codes = list(self._codes(images)) if images is not None else None
        count = len(rows if rows is not None else codes)
        if codes is not None and rows is not None and len(codes) != len(rows):
            raise VltkError(f"{len(codes)} images but {len(rows)} captions: give one caption per image")
        if not count:
            raise VltkError("nothing to sample for: no prompts or images given")
        return [Query(rows[i] if rows else None, codes[i] if codes else None, {}) for i in range(count)]

    def _codes(self, images: Images) -> np.ndarray:
        """(B, N) raster codes of PIL images (through the image tokenizer) or of integer grids (checked)."""
        if isinstance(images, (torch.Tensor, np.ndarray)):
            codes = torch.as_tensor(images)
            if codes.is_floating_point() or codes.dim() not in (2, 3):
                raise VltkError(f"codes must be (B, h, w) or (B, N) integer ids, got {codes.dtype} {tuple(codes.shape)}"
                                " (pass pixels as PIL images)")
        else:
            codes = self.image_tokenizer.encode(images)
        codes = codes.reshape(len(codes), -1).long().cpu()
        grid, vocab = self.record.grid_size, self.record.image_vocab
        if codes.shape[1] != grid * grid:
            raise VltkError(f"{self.path} takes {grid}x{grid} code grids, got {codes.shape[1]} codes per image")
        if len(codes) and not 0 <= int(codes.min()) <= int(codes.max()) < vocab:
            raise VltkError(f"codes must lie in [0, {vocab}) (the image tokenizer's codebook)")
        return codes.numpy()

    def _generate(self, task: str, items: list[Query], seed: int, config: GenerateConfig | None
                  ) -> tuple[torch.Tensor | None, np.ndarray | None]:
        """(codes (B, N) or None, text rows (B, C) or None), batch by batch exactly as `vltk sample` draws them, after
        the stage's checks of the task."""
        check_task(self.kind, task, self.record.model)
        cfg = dataclasses.replace(config or GenerateConfig(), task=task, seed=seed)
        candidates = getattr(cfg, "candidates", 1)  # a `vltk sample` config may ask for re-ranking
        if candidates > 1:  # re-ranking lives in the stage's loop; drawing one here would ignore the setting
            raise VltkError(f"in-memory generation draws one sample per input; for the best of {candidates} "
                            "candidates run the stage: vltk.api.sample(gen, out, candidates=N)")
        return generate(self.model, self.kind, items, cfg, self.text_tokenizer.eos_id, self.record.grid_size,
                        self.device)


HANDLES: dict[str, type[Artifact]] = {
    Stage.SHARD: Shards, Stage.TOKENIZE_TEXT: TextTokenizer, Stage.TOKENIZE_IMAGE: ImageTokenizer,
    Stage.TOKENIZE_LABEL: LabelTokenizer, Stage.ENCODE: Encoded, Stage.TRAIN_GEN: Generator, Stage.SAMPLE: Samples,
    Stage.DECODE: Samples, Stage.SCORE: Scores,
}


def load(path: PathLike, stage: str | tuple[str, ...] | None = None, *,
         device: str | torch.device | None = None) -> Artifact:
    """The artifact at `path` as the handle of its stage (any stage when `stage` is None, else one of those named).

    `device` is where its models load: default the GPU when there is one, else the CPU.
    """
    path = Path(path)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    elif path.is_file():
        raise VltkError(f"{path} is a file; an artifact is a directory holding {MANIFEST}")
    manifest = read_manifest(path) if stage is None else open_artifact(path, stage)  # well-formed, or one line
    chosen = torch.device(device) if device is not None else local_device()
    return HANDLES.get(manifest["stage"], Artifact)(path=path, manifest=manifest, device=chosen)
