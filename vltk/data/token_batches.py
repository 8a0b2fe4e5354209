"""Generator training batches (image codes + one caption per image, optionally MixSel pairs) from an encoded artifact.

    data = TokenBatches(encoded, "train", batch_size=256, seed=0, rank=0, world_size=1, mixsel=True)
    for batch in data(position=0):      # this process's share (b = 256 / world_size) of each global batch
        batch["image"], batch["text"]   # (b, N) codes in raster order, (b, C) MAGVLT caption rows

The batch (the contract with `vltk.objectives`), all long unless said otherwise:
- "index" (b,): the samples' stream positions (global batch k holds [p + kB, p + (k+1)B) after a start position p);
- "image" (b, N): VQ codes, raster order; "text" (b, C): one caption's MAGVLT row (BPE ids, EOS, EOS padding, no
  SOT); "text_len" (b,): tokens before the first EOS + 1 (C when truncated without EOS);
- with `mixsel`: "mix_image" (b, N) the codes of the pixel-space mix of A and B; "mix_vertical" (b,) bool (True: A on
  top, B below; False: A left, B right); "a_image" / "b_image" (b, N) the unmixed codes; "a_text" / "b_text" (b, C)
  and "a_len" / "b_len" (b,) one caption each; "joined_text" (b, C) = [A's tokens, SEP, B's tokens, EOS, EOS...]
  (`join_captions`) and "joined_len" (b,); "a_span" / "b_span" (b, 2) = [start, end) of A's / B's kept tokens in
  joined_text (SEP and EOS excluded; start == end when nothing of that caption is kept).

The stream, its rank slicing and resume are `vltk.data.loader.SplitStream`'s. Each sample takes one of its record's
captions uniformly at random and, with `bpe_dropout` > 0, re-encodes that caption's raw text with BPE-dropout; both
draws come from a generator keyed by (seed, split, epoch, stream position), so they do not depend on the process split.
With `mixsel`, a second stream over the split's MixSel pairs (`mixsel-<split>`, its own length and epochs) is read at
the same positions, so sample j of the mix part shares its place in the global batch with sample j of the plain part.

A VAE-encoded artifact (GIVT's input) gives "mean" and "logvar" (b, N, d) float32 in raster order, channels last,
instead of "image" (the generator samples z from them every step); MixSel is VQ only. With `classes` (class-conditional
GIVT), "label" (b,) long is each record's class: the value of the `class_key` field of its meta (as the source's
table or JSON gave it), an int in [0, len(classes)) or one of the `classes` names; a record without one stops the run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vltk.data.encoded import EncodedSample, MixSel, encoded_paths, mixsel_split, unpack
from vltk.data.loader import SplitStream, split_size
from vltk.data.shards import raw_samples
from vltk.errors import VltkError
from vltk.records import EncodedContents
from vltk.text.bpe import BPETokenizer, text_lengths

Span = tuple[int, int]


def caption_ids(row: np.ndarray, eos_id: int) -> list[int]:
    """The caption tokens of a MAGVLT row: those before its first EOS, or the whole row when it has none."""
    ends = np.flatnonzero(row == eos_id)
    return row[: ends[0] if len(ends) else len(row)].tolist()


def join_captions(a_ids: list[int], b_ids: list[int], *, sep_id: int, eos_id: int,
                  context: int) -> tuple[list[int], Span, Span]:
    """MixSel's joined text: (row [A, SEP, B, EOS, EOS...] of length `context`, A's span, B's span).

    `a_ids` and `b_ids` are caption tokens without EOS. When both do not fit in context - 2 (SEP and EOS), A keeps
    at least half the budget (more when B is short), B the rest; each keeps its first tokens. Spans are [start, end)
    of the kept tokens in the row, empty (start == end) for an empty caption or one cut away entirely.
    """
    if context < 2:
        raise ValueError(f"a joined text needs room for SEP and EOS: context {context} < 2")
    budget = context - 2
    keep_a = min(len(a_ids), max(budget // 2, budget - len(b_ids)))
    keep_b = min(len(b_ids), budget - keep_a)
    row = [*a_ids[:keep_a], sep_id, *b_ids[:keep_b]]
    row += [eos_id] * (context - len(row))
    return row, (0, keep_a), (keep_a + 1, keep_a + 1 + keep_b)


def _slim(record: EncodedSample | MixSel, keep: str | None = None) -> EncodedSample | MixSel:
    """The record without what batches never read (source, and meta but its `keep` field), so that an in-memory split
    stays small."""
    if isinstance(record, EncodedSample):
        meta = {keep: record.meta[keep]} if keep in record.meta else {}
        return dataclasses.replace(record, source="", meta=meta)
    return dataclasses.replace(record, a=_slim(record.a), b=_slim(record.b))


def _images(records: list[EncodedSample] | list[MixSel]) -> torch.Tensor:
    """(b, N) long: each record's (h, w) code grid in raster order."""
    return _long(np.stack([record.image["codes"].reshape(-1) for record in records]))


def _latents(records: list[EncodedSample], field: str) -> torch.Tensor:
    """(b, N, d) float32: each record's (d, h, w) posterior `field` as N = h w tokens in raster order."""
    stacked = np.stack([record.image[field] for record in records]).astype(np.float32)  # (b, d, h, w)
    return torch.from_numpy(stacked).flatten(2).transpose(1, 2).contiguous()


def class_index(value: Any, classes: tuple[str, ...], key: str, record: str) -> int:
    """The class id of a meta value: an int (or an int-valued string) in [0, len(classes)), or a class name."""
    name = str(value)
    if name in classes:
        return classes.index(name)
    if isinstance(value, (int, str)) and not isinstance(value, bool) and name.lstrip("-").isdigit():
        if 0 <= int(name) < len(classes):
            return int(name)
    raise VltkError(f"record {record}: class {key!r} = {value!r} is not one of the {len(classes)} classes "
                    f"(an id in [0, {len(classes)}) or a name: {', '.join(classes[:5])}{', ...' * (len(classes) > 5)})")


def _long(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))


def record_class(record: EncodedSample, classes: tuple[str, ...], key: str) -> int:
    """The class id of a record: its meta field `key`, by `class_index`; a record without one is an error."""
    if key not in record.meta:
        raise VltkError(f"record {record.key} has no class: its meta has no {key!r} field")
    return class_index(record.meta[key], classes, key, record.key)


class TokenBatches:
    """This process's share of each global generator batch of one split of a VQ-encoded artifact (module docstring).

    `image_tokens` (N), `text_tokens` (C), `codebook_size` and `num_samples` (of the plain split) come from the
    artifact's manifest.
    """

    def __init__(
        self, encoded: Path, split: str, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        mixsel: bool = False, bpe_dropout: float = 0.0, tokenizer: BPETokenizer | None = None,
        classes: tuple[str, ...] = (), class_key: str = "label", in_memory_max: int = 100_000,
        shuffle_buffer: int = 2_000,
    ):
        if not 0.0 <= bpe_dropout < 1.0:
            raise ValueError(f"bpe_dropout must be in [0, 1), got {bpe_dropout}")
        if bpe_dropout > 0.0 and tokenizer is None:
            raise ValueError("BPE-dropout re-encodes the captions: pass the artifact's text tokenizer")
        contents = EncodedContents.read(encoded)
        self.kind = contents.kind
        if mixsel and self.kind != "vq":
            raise VltkError(f"{encoded} holds continuous latents; MixSel pairs are read from VQ-encoded artifacts")
        self.classes, self.class_key = tuple(classes), class_key
        self.image_tokens = contents.grid_size ** 2
        self.text_tokens = contents.context_length
        self.codebook_size = contents.codebook_size or 0  # 0 for latents
        self.eos_id, self.sep_id = contents.eos_id, contents.sep_id
        if tokenizer is not None and (tokenizer.eos_id, tokenizer.sep_id) != (self.eos_id, self.sep_id):
            raise VltkError(f"the text tokenizer's EOS / SEP ids ({tokenizer.eos_id}, {tokenizer.sep_id}) are not "
                            f"those {encoded} was encoded with ({self.eos_id}, {self.sep_id})")
        self.bpe_dropout, self.tokenizer = bpe_dropout, tokenizer

        def load(raw: dict[str, Any]) -> EncodedSample | MixSel:
            return _slim(unpack(raw), keep=class_key if classes else None)

        def stream(name: str) -> SplitStream[dict[str, Any], EncodedSample | MixSel]:
            return SplitStream(encoded_paths(encoded, name), split_size(contents.splits, encoded, name), name=name,
                               read=raw_samples, load=load, seed=seed, batch_size=batch_size, rank=rank,
                               world_size=world_size, in_memory_max=in_memory_max, shuffle_buffer=shuffle_buffer)

        self.plain = stream(split)
        self.num_samples = self.plain.num_samples
        self.mix: SplitStream[dict[str, Any], EncodedSample | MixSel] | None = None
        if mixsel:
            if mixsel_split(split) not in contents.splits:
                raise VltkError(f"{encoded} has no MixSel pairs of its '{split}' split: make them with `vltk encode` "
                                f"with mixsel_pairs = 1 and '{split}' in mixsel_splits")
            self.mix = stream(mixsel_split(split))

    def _caption(self, stream: SplitStream, position: int, record: EncodedSample, purpose: str) -> np.ndarray:
        """(C,) one of the record's captions as a MAGVLT row, drawn (and BPE-dropped out) for this position."""
        rng = stream.sample_rng(position, purpose)
        choice = int(rng.integers(len(record.text)))
        if self.bpe_dropout == 0.0:
            return record.text[choice]
        # encode_batch lays the row out (truncation, EOS, EOS padding) exactly as the stored rows were.
        return self.tokenizer.encode_batch([record.captions[choice]], self.text_tokens, self.bpe_dropout, rng)[0]

    def _plain(self, items: list[tuple[int, EncodedSample]]) -> dict[str, torch.Tensor]:
        text = np.stack([self._caption(self.plain, q, record, "caption") for q, record in items])  # (b, C)
        records = [record for _, record in items]
        if self.kind == "vq":
            image = {"image": _images(records)}
        else:
            image = {"mean": _latents(records, "mean"), "logvar": _latents(records, "logvar")}
        if self.classes:
            image["label"] = torch.tensor([record_class(record, self.classes, self.class_key) for record in records],
                                          dtype=torch.long)
        return {
            "index": torch.tensor([q for q, _ in items], dtype=torch.long),
            **image,
            "text": _long(text),
            "text_len": _long(text_lengths(text, self.eos_id)),
        }

    def _mixed(self, items: list[tuple[int, MixSel]]) -> dict[str, torch.Tensor]:
        a_rows, b_rows, joined, spans = [], [], [], []
        for q, pair in items:
            a_row = self._caption(self.mix, q, pair.a, "a")
            b_row = self._caption(self.mix, q, pair.b, "b")
            row, a_span, b_span = join_captions(caption_ids(a_row, self.eos_id), caption_ids(b_row, self.eos_id),
                                                sep_id=self.sep_id, eos_id=self.eos_id, context=self.text_tokens)
            a_rows.append(a_row)
            b_rows.append(b_row)
            joined.append(row)
            spans.append((a_span, b_span))
        a_text, b_text, joined_text = np.stack(a_rows), np.stack(b_rows), np.array(joined)  # (b, C) each
        span = torch.tensor(spans, dtype=torch.long)  # (b, 2 captions, 2)
        pairs = [pair for _, pair in items]
        return {
            "mix_image": _images(pairs),
            "mix_vertical": torch.tensor([pair.direction == "vertical" for pair in pairs], dtype=torch.bool),
            "a_image": _images([pair.a for pair in pairs]),
            "b_image": _images([pair.b for pair in pairs]),
            "a_text": _long(a_text),
            "b_text": _long(b_text),
            "a_len": _long(text_lengths(a_text, self.eos_id)),
            "b_len": _long(text_lengths(b_text, self.eos_id)),
            "joined_text": _long(joined_text),
            "joined_len": _long(text_lengths(joined_text, self.eos_id)),
            "a_span": span[:, 0],
            "b_span": span[:, 1],
        }

    def __call__(self, position: int = 0, worker: int = 0, workers: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """Batch dicts of this process's share of each global batch, starting `position` samples into the stream
        (every `workers`-th from the `worker`-th: `vltk.data.loader.Workers`)."""
        if self.mix is None:
            yield from map(self._plain, self.plain(position, worker, workers))
            return
        for plain, mixed in zip(self.plain(position, worker, workers), self.mix(position, worker, workers)):
            yield {**self._plain(plain), **self._mixed(mixed)}
