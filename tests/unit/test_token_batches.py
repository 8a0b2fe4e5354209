"""Generator batches from an encoded artifact: the contract's shapes, caption draws, MixSel joins, ranks and resume."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
import torch

from vltk import artifacts
from vltk.data.encoded import EncodedSample, MixSel, RecordWriter, mixsel_split
from vltk.data.loader import batches
from vltk.data.token_batches import TokenBatches, caption_ids, join_captions
from vltk.errors import VltkError
from vltk.records import EncodedContents
from vltk.text.bpe import BPETokenizer, normalize
from vltk.text.train import count_words, learn_merges

GRID, CODEBOOK, CONTEXT = 3, 256, 12
N = GRID * GRID
RECORDS, PAIRS = 10, 7  # neither divides into batches of 4, so batches straddle epochs of both streams
BATCH = 4
COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
LONG = "a very large red circle sits far to the left of a small green square in the middle of the picture"


def captions_of(i: int) -> tuple[str, ...]:
    """1 to 3 captions, all different; record 0's first is longer than the context (its row has no EOS)."""
    own = tuple(f"the {COLORS[(i + j) % 4]} {SHAPES[i % 3]} number {i} caption {j}" for j in range(1 + i % 3))
    return (LONG, *own[1:]) if i == 0 else own


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    words, _ = count_words([c for i in range(RECORDS) for c in captions_of(i)])
    return BPETokenizer(learn_merges(words, 200), context_length=CONTEXT)


def encoded_record(i: int, tok: BPETokenizer) -> EncodedSample:
    codes = (np.arange(N) + N * i).astype(np.uint16).reshape(GRID, GRID)  # unique per record: tells records apart
    captions = captions_of(i)
    return EncodedSample(key=f"r{i}", image={"codes": codes}, text=tok.encode_batch(list(captions)), captions=captions,
                   source="synthetic", meta={"i": i})


def write_split(work, name: str, records: list) -> dict:
    writer = RecordWriter(str(work / f"{name}-000000-%03d.tar"), maxcount=3)  # several tars: streaming shuffles them
    for record in records:
        writer.write(record)
    return {"samples": writer.samples, "captions": writer.captions, "shards": writer.close()}


def make_artifact(out, tok: BPETokenizer, *, mixsel: bool = True, kind: str = "vq", claimed: int | None = None):
    """A tiny encoded artifact made by hand: RECORDS train records and PAIRS MixSel pairs (i, i + 3)."""
    job = artifacts.begin(out, stage="encode", config={"test": True}, inputs={})
    records = [encoded_record(i, tok) for i in range(RECORDS)]
    if kind == "vae":
        latent = np.zeros((2, GRID, GRID), np.float16)
        records = [EncodedSample(key=r.key, image={"mean": latent, "logvar": latent}, text=r.text, captions=r.captions)
                   for r in records]
    splits = {"train": write_split(job.work, "train", records)}
    if mixsel:
        pairs = [MixSel(key=f"p{p}", direction=("vertical", "horizontal")[p % 2],
                        image={"codes": np.full((GRID, GRID), 200 + p, np.uint16)},
                        a=records[p], b=records[(p + 3) % RECORDS]) for p in range(PAIRS)]
        splits[mixsel_split("train")] = write_split(job.work, mixsel_split("train"), pairs)
    if claimed is not None:
        splits["train"]["samples"] = claimed
    return job.publish(EncodedContents(
        kind=kind, splits=splits, image_size=4 * GRID, grid_size=GRID, codebook_size=CODEBOOK, context_length=CONTEXT,
        text_vocab_size=tok.vocab_size, eos_id=tok.eos_id, pad_id=tok.eos_id, sep_id=tok.sep_id, sot_id=tok.sot_id,
        bpe_dropout=0.0, image_tokenizer={}).to_dict())


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tok):
    return make_artifact(tmp_path_factory.mktemp("tokens") / "encoded", tok)


def take(data: TokenBatches, n: int, position: int = 0) -> list[dict[str, torch.Tensor]]:
    return list(itertools.islice(data(position), n))


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def cat(batches: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def record_of(image: torch.Tensor) -> int:
    return int(image[0]) // N


def pair_of(mix_image: torch.Tensor) -> int:
    return int(mix_image[0]) - 200


def n_txt(row: list[int], eos: int) -> int:
    return row.index(eos) + 1 if eos in row else len(row)


# ---- join_captions: hand-computed cases of the rule (SEP = 9, EOS = 0) ----

A10, B10 = list(range(1, 11)), list(range(11, 21))


@pytest.mark.parametrize("a, b, context, row, a_span, b_span", [
    ([1, 2], [3], 8, [1, 2, 9, 3, 0, 0, 0, 0], (0, 2), (3, 4)),  # fits: nothing cut
    ([1, 2, 3], [4, 5, 6], 8, [1, 2, 3, 9, 4, 5, 6, 0], (0, 3), (4, 7)),  # exactly fills the budget of 6
    (A10, B10, 8, [1, 2, 3, 9, 11, 12, 13, 0], (0, 3), (4, 7)),  # both long: half each
    (A10, B10, 9, [1, 2, 3, 9, 11, 12, 13, 14, 0], (0, 3), (4, 8)),  # odd budget 7: A floor(7/2), B the rest
    (A10, [11], 8, [1, 2, 3, 4, 5, 9, 11, 0], (0, 5), (6, 7)),  # short B: A takes what B leaves
    ([1], B10, 8, [1, 9, 11, 12, 13, 14, 15, 0], (0, 1), (2, 7)),  # short A: B takes what A leaves
    ([], [11, 12], 6, [9, 11, 12, 0, 0, 0], (0, 0), (1, 3)),  # empty A: an empty span
    ([], [], 4, [9, 0, 0, 0], (0, 0), (1, 1)),
    ([1], [2], 2, [9, 0], (0, 0), (1, 1)),  # no budget at all: SEP and EOS only
])
def test_join_captions_follows_the_truncation_rule(a, b, context, row, a_span, b_span):
    assert join_captions(a, b, sep_id=9, eos_id=0, context=context) == (row, a_span, b_span)


def test_join_captions_needs_room_for_sep_and_eos():
    with pytest.raises(ValueError, match="SEP and EOS"):
        join_captions([1], [2], sep_id=9, eos_id=0, context=1)


def test_caption_ids_stop_at_the_first_eos():
    assert caption_ids(np.array([5, 6, 0, 0]), eos_id=0) == [5, 6]
    assert caption_ids(np.array([5, 6, 7, 8]), eos_id=0) == [5, 6, 7, 8]  # truncated caption: no EOS
    assert caption_ids(np.array([0, 0, 0]), eos_id=0) == []


# ---- batches ----

def test_batches_follow_the_contract(encoded, tok):
    data = TokenBatches(encoded, "train", batch_size=BATCH, seed=0, mixsel=True)
    assert (data.image_tokens, data.text_tokens, data.codebook_size, data.num_samples) == (N, CONTEXT, CODEBOOK,
                                                                                          RECORDS)
    shapes = {"index": (BATCH,), "image": (BATCH, N), "text": (BATCH, CONTEXT), "text_len": (BATCH,),
              "mix_image": (BATCH, N), "mix_vertical": (BATCH,), "a_image": (BATCH, N), "b_image": (BATCH, N),
              "a_text": (BATCH, CONTEXT), "b_text": (BATCH, CONTEXT), "a_len": (BATCH,), "b_len": (BATCH,),
              "joined_text": (BATCH, CONTEXT), "joined_len": (BATCH,), "a_span": (BATCH, 2), "b_span": (BATCH, 2)}
    batches = take(data, 6)
    for k, batch in enumerate(batches):
        assert {key: tuple(v.shape) for key, v in batch.items()} == shapes
        assert all(v.dtype == (torch.bool if key == "mix_vertical" else torch.long) for key, v in batch.items())
        assert batch["index"].tolist() == list(range(k * BATCH, (k + 1) * BATCH))
    every = cat(batches)
    eos, sep = tok.eos_id, tok.sep_id
    for j in range(len(every["index"])):
        i = record_of(every["image"][j])
        assert every["image"][j].tolist() == list(range(N * i, N * (i + 1)))  # raster order of the (3, 3) grid
        row = every["text"][j].tolist()
        assert row in encoded_record(i, tok).text.tolist() and every["text_len"][j] == n_txt(row, eos)

        p = pair_of(every["mix_image"][j])
        assert every["mix_image"][j].tolist() == [200 + p] * N and bool(every["mix_vertical"][j]) == (p % 2 == 0)
        joined = every["joined_text"][j].tolist()
        (a0, a1), (b0, b1) = every["a_span"][j].tolist(), every["b_span"][j].tolist()
        for part, i_part, start, end in (("a", p, a0, a1), ("b", (p + 3) % RECORDS, b0, b1)):
            assert record_of(every[f"{part}_image"][j]) == i_part
            row = every[f"{part}_text"][j].tolist()
            assert row in encoded_record(i_part, tok).text.tolist() and every[f"{part}_len"][j] == n_txt(row, eos)
            tokens = row[: n_txt(row, eos) - (eos in row)]
            assert joined[start:end] == tokens[: end - start]  # each caption keeps its first tokens
        assert a0 == 0 and joined[a1] == sep and b0 == a1 + 1 and joined[b1:] == [eos] * (CONTEXT - b1)
        assert every["joined_len"][j] == b1 + 1


def test_mixsel_has_its_own_epochs_at_the_same_positions(encoded):
    data = TokenBatches(encoded, "train", batch_size=BATCH, seed=0, mixsel=True)
    every = cat(take(data, 11))  # 44 positions: 6 mix epochs and 4 plain ones, and a bit
    assert every["index"].tolist() == list(range(len(every["index"])))
    pairs = [pair_of(image) for image in every["mix_image"]]
    records = [record_of(image) for image in every["image"]]
    for e in range(len(pairs) // PAIRS):
        assert sorted(pairs[e * PAIRS:(e + 1) * PAIRS]) == list(range(PAIRS))
    for e in range(len(records) // RECORDS):
        assert sorted(records[e * RECORDS:(e + 1) * RECORDS]) == list(range(RECORDS))
    assert pairs[:PAIRS] != pairs[PAIRS:2 * PAIRS]  # a new order each epoch


@pytest.mark.parametrize("in_memory_max, dropout", [(10_000, 0.0), (0, 0.0), (10_000, 0.3)],
                         ids=["memory", "streaming", "bpe-dropout"])
def test_determinism_rank_split_and_resume(encoded, tok, in_memory_max, dropout):
    make = lambda seed=0, rank=0, world=1: TokenBatches(  # noqa: E731
        encoded, "train", batch_size=BATCH, seed=seed, rank=rank, world_size=world, mixsel=True,
        bpe_dropout=dropout, tokenizer=tok, in_memory_max=in_memory_max, shuffle_buffer=4)
    one = take(make(), 8)
    assert same(one, take(make(), 8)) and not same(one, take(make(seed=1), 8))

    # Two processes: each takes half of every global batch, and together they make the one-process batches.
    halves = [take(make(rank=r, world=2), 8) for r in range(2)]
    assert all(h["image"].shape[0] == BATCH // 2 for h in halves[0])
    assert same([cat([a, b]) for a, b in zip(*halves)], one)

    # Resuming at a position (across epoch boundaries of both streams) continues the stream exactly.
    for skip in (2, 5):
        assert same(take(make(), 8 - skip, position=skip * BATCH), one[skip:])
    assert same(take(make(rank=1, world=2), 3, position=5 * BATCH), halves[1][5:])


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine: a test, not a run
@pytest.mark.parametrize("in_memory_max", [10_000, 0], ids=["memory", "streaming"])
def test_dataloader_workers_give_the_same_batches(encoded, tok, in_memory_max):
    """Batches built by 2 or 3 DataLoader worker processes (each makes every 2nd / 3rd global batch, the loader takes
    them in turn) are the batches of one process, BPE-dropout and MixSel included, from a resumed position too."""
    data = TokenBatches(encoded, "train", batch_size=BATCH, seed=0, mixsel=True, bpe_dropout=0.3, tokenizer=tok,
                        in_memory_max=in_memory_max, shuffle_buffer=4)
    for position in (0, 3 * BATCH):
        here = take(data, 7, position)
        for workers in (2, 3):
            made = list(itertools.islice(batches(data, position, workers), 7))
            assert same(made, here)


def test_every_caption_is_drawn(encoded, tok):
    data = TokenBatches(encoded, "train", batch_size=BATCH, seed=0)
    every = cat(take(data, 30 * RECORDS // BATCH))  # 30 epochs
    rows = {i: encoded_record(i, tok).text.tolist() for i in range(RECORDS)}
    choices = [(record_of(image), rows[record_of(image)].index(row.tolist()))
               for image, row in zip(every["image"], every["text"])]
    assert set(choices) == {(i, c) for i in range(RECORDS) for c in range(len(rows[i]))}
    # Each sample draws on its own: the records with three captions (2, 5, 8) do not all take the same one per epoch.
    per_epoch = [{c for i, c in choices[e * RECORDS:(e + 1) * RECORDS] if i % 3 == 2} for e in range(30)]
    assert any(len(c) > 1 for c in per_epoch)


def test_streaming_yields_the_same_samples_per_epoch_as_memory(encoded):
    def epochs(in_memory_max: int) -> list[collections.Counter]:
        data = TokenBatches(encoded, "train", batch_size=BATCH, seed=0, mixsel=True, in_memory_max=in_memory_max,
                            shuffle_buffer=4)
        every = cat(take(data, 7))  # 28 positions: 2 plain epochs, 4 mix ones
        plain = [collections.Counter(record_of(x) for x in every["image"][e * RECORDS:(e + 1) * RECORDS])
                 for e in range(2)]
        mixed = [collections.Counter(pair_of(x) for x in every["mix_image"][e * PAIRS:(e + 1) * PAIRS])
                 for e in range(4)]
        return plain + mixed

    memory, streamed = epochs(10_000), epochs(0)
    assert memory == streamed and all(set(c.values()) == {1} for c in memory)


def test_bpe_dropout_changes_ids_but_not_the_text(encoded, tok):
    data = TokenBatches(encoded, "train", batch_size=BATCH, seed=0, mixsel=True, bpe_dropout=0.3, tokenizer=tok)
    every = cat(take(data, 6 * RECORDS // BATCH))
    changed = 0
    for images, texts in (("image", "text"), ("a_image", "a_text"), ("b_image", "b_text")):
        for image, row in zip(every[images], every[texts]):
            record = encoded_record(record_of(image), tok)
            ids = caption_ids(row.numpy(), tok.eos_id)
            changed += row.tolist() not in record.text.tolist()
            text, captions = tok.decode(ids), [normalize(c) for c in record.captions]
            if len(ids) < CONTEXT:
                assert text in captions
            else:  # cut at the context (dropout makes more, shorter tokens): the start of one of the captions
                assert any(c.startswith(text) for c in captions)
    assert changed > 0


def test_errors_name_the_problem(encoded, tok, tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        TokenBatches(encoded, "train", batch_size=BATCH, seed=0, bpe_dropout=0.1)
    with pytest.raises(VltkError, match="divisible"):
        TokenBatches(encoded, "train", batch_size=BATCH, seed=0, world_size=3)
    vae = make_artifact(tmp_path / "vae", tok, mixsel=False, kind="vae")
    with pytest.raises(VltkError, match="continuous latents; MixSel pairs are read from VQ-encoded artifacts"):
        TokenBatches(vae, "train", batch_size=BATCH, seed=0, mixsel=True)
    plain = make_artifact(tmp_path / "plain", tok, mixsel=False)
    TokenBatches(plain, "train", batch_size=BATCH, seed=0)  # fine without MixSel
    with pytest.raises(VltkError, match=r"no MixSel pairs .* mixsel_pairs = 1 and 'train' in mixsel_splits"):
        TokenBatches(plain, "train", batch_size=BATCH, seed=0, mixsel=True)
    damaged = make_artifact(tmp_path / "damaged", tok, mixsel=False, claimed=RECORDS + 1)
    with pytest.raises(VltkError, match="hold 10 samples but its manifest says 11"):
        TokenBatches(damaged, "train", batch_size=BATCH, seed=0)
