"""The stages' names and what each kind of artifact promises its readers: one typed record per artifact kind.

    manifest = open_artifact(path, Stage.ENCODE)
    encoded = EncodedContents.from_manifest(manifest, path)       # one line when a field a reader needs is missing
    encoded.grid_size, encoded.eos_id, encoded.splits["train"]["samples"]
    job.publish(EncodedContents(kind="vq", ...).to_dict())      # how its stage writes it

A record types the fields that other stages read (the contract between a stage and its readers); whatever else a stage
records about its run (metrics, timings, the summary) travels beside them in `extra`, untyped, and is written out as
before. A change to what a stage writes therefore fails in one place: the record's constructor in the stage, or
`from_manifest` in a reader of an artifact written before the change.

Versions: the manifest's layout is `vltk.artifacts.SCHEMA` (2: input paths relative to the artifact). A reader takes
schema 1 and 2 (`artifacts.input_path`) and refuses, in one line, a manifest of a later schema (written by a newer
vltk) or one whose contents lack a field its record needs (written by an older vltk before the field existed): re-run
that stage with this version.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from vltk.artifacts import open_artifact
from vltk.errors import VltkError


class Stage(enum.StrEnum):
    """Every stage that writes an artifact, by the name its manifest records (the CLI command, spaced by hyphens)."""

    SYNTH = "synth"
    SHARD = "shard"
    TOKENIZE_TEXT = "tokenize-text"
    TOKENIZE_IMAGE = "tokenize-image"
    TOKENIZE_LABEL = "tokenize-label"
    ENCODE = "encode"
    TRAIN_GEN = "train-gen"
    SAMPLE = "sample"
    DECODE = "decode"
    SCORE = "score"
    COMPARE = "compare"


R = TypeVar("R", bound="Contents")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Contents:
    """The typed part of a manifest's `contents`; subclasses name their stage and fields. A field whose default is
    None is optional: it is left out of the manifest when None (a VQ artifact has no latent_channels)."""

    STAGE: ClassVar[Stage]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # the rest of the contents, as written

    @classmethod
    def from_manifest(cls: type[R], manifest: dict[str, Any], where: Path | str) -> R:
        contents = manifest["contents"]
        typed = [f for f in dataclasses.fields(cls) if f.name != "extra"]
        required = [f.name for f in typed if f.default is dataclasses.MISSING and f.default_factory is
                    dataclasses.MISSING]
        if missing := [name for name in required if name not in contents]:
            made_by = manifest.get("vltk_version", "an older version")
            raise VltkError(f"{where} was written by vltk {made_by}, whose {cls.STAGE} manifest lacks "
                            f"{', '.join(missing)}: re-run `vltk {cls.STAGE.replace('-', ' ', 1)}` for it")
        names = {f.name for f in typed}
        return cls(**{name: contents[name] for name in names if name in contents},
                   extra={k: v for k, v in contents.items() if k not in names})

    @classmethod
    def read(cls: type[R], path: Path) -> R:
        """The record of the artifact at `path`, which must be one of this record's stage."""
        return cls.from_manifest(open_artifact(path, cls.STAGE), path)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's contents: the typed fields (optional ones when set), then `extra`."""
        typed = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name != "extra" and not (f.default is None and getattr(self, f.name) is None)}
        return {**typed, **self.extra}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardsContents(Contents):
    """`vltk shard`: per split {samples, captions, shards: [tar names]}, the image side and what was skipped."""

    STAGE: ClassVar[Stage] = Stage.SHARD
    splits: dict[str, dict[str, Any]]
    image_size: int
    skipped: dict[str, int]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextTokenizerContents(Contents):
    """`vltk tokenize text`: the vocabulary, the context and the special ids (EOS doubles as PAD)."""

    STAGE: ClassVar[Stage] = Stage.TOKENIZE_TEXT
    vocab_size: int
    context_length: int
    eos_id: int
    pad_id: int
    sot_id: int
    sep_id: int
    bpe_dropout: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageTokenizerContents(Contents):
    """`vltk tokenize image`: a VQ-GAN (codebook_size) or a beta-VAE (latent_channels), its sizes and model config."""

    STAGE: ClassVar[Stage] = Stage.TOKENIZE_IMAGE
    kind: str  # "vqgan" | "vae"
    image_size: int
    grid_size: int
    model: dict[str, Any]  # the ImageTokenizerConfig that rebuilds it
    codebook_size: int | None = None
    latent_channels: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelTokenizerContents(Contents):
    """`vltk tokenize label`: UViM's label autoencoder for a dense task, its bottleneck, sizes and model config."""

    STAGE: ClassVar[Stage] = Stage.TOKENIZE_LABEL
    task: str  # "panoptic" | "depth"
    bottleneck: str  # "vae" | "vq"
    image_size: int
    code_len: int  # latent tokens per label map (a square grid)
    latent_channels: int  # d: the Gaussian's or the codewords' width
    model: dict[str, Any]  # the LabelTokenizerConfig that rebuilds it
    codebook_size: int | None = None  # vq
    categories: list[dict[str, Any]] | None = None  # panoptic: the shards' COCO categories (class c = c-th by id)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncodedContents(Contents):
    """`vltk encode`: per split {samples, captions, shards}, the image tokens' kind and sizes, the text's ids."""

    STAGE: ClassVar[Stage] = Stage.ENCODE
    kind: str  # "vq" (codes) | "vae" (latents)
    splits: dict[str, dict[str, Any]]
    image_size: int
    grid_size: int
    context_length: int
    text_vocab_size: int
    eos_id: int
    pad_id: int
    sep_id: int
    sot_id: int
    bpe_dropout: float
    image_tokenizer: dict[str, Any]  # what the tokenizer's manifest says of itself (kind, quality)
    codebook_size: int | None = None
    latent_channels: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorContents(Contents):
    """`vltk train-gen`: which generator, its model config, and the grid and ids it was trained with."""

    STAGE: ClassVar[Stage] = Stage.TRAIN_GEN
    generator: str  # "magvlt" | "argvlt" | "givt-causal" | "givt-maskgit"
    model: dict[str, Any]  # the model config that rebuilds it
    grid_size: int
    image_size: int
    ids: dict[str, int]  # eos_id, pad_id, sep_id, sot_id
    text_vocab: int
    image_tokens: int
    text_tokens: int
    image_vocab: int | None = None  # MAGVLT / ARGVLT
    latent_channels: int | None = None  # GIVT
    classes: list[str] | None = None  # GIVT: the class names of a class-conditional run
    class_key: str | None = None  # GIVT: the meta field the classes were read from


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplesContents(Contents):
    """`vltk sample`: the task, the generator kind and how many samples (rows of samples.jsonl)."""

    STAGE: ClassVar[Stage] = Stage.SAMPLE
    task: str
    generator: str
    count: int
    image_size: int
    candidates: int
    rerank: str | None  # None with one candidate
    acceptance: float | None = None  # GIVT with DB-CFG: the rejection sampler's acceptance rate


RECORDS: dict[str, type[Contents]] = {record.STAGE: record for record in (
    ShardsContents, TextTokenizerContents, ImageTokenizerContents, LabelTokenizerContents, EncodedContents,
    GeneratorContents, SamplesContents)}
