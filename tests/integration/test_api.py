"""vltk.api: a handle per artifact kind, one-line errors, and in-memory generation that equals calling the samplers
directly (an independent path: the BPE, the sampler and the tokenizer's decoder, wired by hand)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vltk
from vltk import api
from vltk.errors import VltkError
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.models.artifact import load_generator
from vltk.pipeline.sample import SampleConfig
from vltk.sampling import magvlt as mg
from vltk.text.bpe import BPETokenizer, text_lengths

from tests.factories import copy_build

PROMPTS = ["a red circle", "a small blue square above a green triangle", "a yellow star"]


@pytest.fixture(scope="module")
def root(tiny_magvlt, tmp_path_factory):
    return copy_build(tiny_magvlt, tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def gen(root):
    return vltk.load(root / "gen", device="cpu")


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])


def test_load_gives_the_handle_of_each_stage(root, gen):
    kinds = {"raw": api.Artifact, "shards": api.Shards, "text-tok": api.TextTokenizer,
             "image-tok": api.ImageTokenizer, "encoded": api.Encoded, "gen": api.Generator}
    for name, kind in kinds.items():
        handle = vltk.load(root / name)
        assert type(handle) is kind and handle.path == root / name
    assert vltk.load(root / "gen" / "manifest.json").path == root / "gen"
    assert gen.stage == "train-gen" and gen.kind == "magvlt" and gen.config["generator"] == "magvlt"
    assert gen.inputs == {"encoded": root / "encoded"}
    encoded = gen.upstream("encoded")
    assert isinstance(encoded, api.Encoded) and encoded.path == root / "encoded"
    assert isinstance(encoded.upstream("text_tok"), api.TextTokenizer)
    assert gen.text_tokenizer.vocab_size == vltk.load(root / "text-tok").contents["vocab_size"]
    assert isinstance(gen.image_tokenizer, api.ImageTokenizer) and gen.image_tokenizer.path == root / "image-tok"
    val = list(encoded.records("val"))
    assert val and val[0].image["codes"].shape == (8, 8)
    assert [s.key for s in vltk.load(root / "shards").samples("val")] == [r.key for r in val]


def test_sample_and_score_from_python(root, gen):
    samples = api.sample(gen, root / "samples", prompts=PROMPTS[:2], overrides=["magvlt.image_steps=4"], cpu=True)
    assert isinstance(samples, api.Samples) and samples.config["magvlt"]["image_steps"] == 4
    assert [row["prompt"] for row in samples.rows] == PROMPTS[:2]
    assert [image.size for image in samples.images()] == [(16, 16)] * 2
    scores = api.score(samples, root / "scores", meteor=False)
    assert isinstance(scores, api.Scores) and scores.metrics["task"] == "t2i" and scores.metrics["count"] == 2
    assert scores.report.is_file() and vltk.load(root / "scores").upstream("samples").path == root / "samples"


def test_user_errors_are_one_line(root, gen, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for name, manifest in {"toy": {"stage": "toy", "config": {}, "contents": {},
                                   "inputs": {"source": {"path": "raw", "fingerprint": "0"}}},
                           "other": {"name": "not ours"}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
    cases = [
        (lambda: vltk.load(tmp_path / "missing"), "no such artifact"),
        (lambda: vltk.load(tmp_path / "empty"), "not a finished vltk artifact"),
        (lambda: vltk.load(tmp_path / "file.txt"), "is a file"),
        (lambda: vltk.load(root / "text-tok", "train-gen"), "'tokenize-text' artifact"),
        (lambda: gen.upstream("shards"), "has no input 'shards'"),
        (lambda: vltk.load(tmp_path / "toy").upstream("source"), "raw source"),
        (lambda: vltk.load(tmp_path / "other"), "not a vltk manifest"),
        (lambda: gen.text_to_image("a red circle"), "list of strings"),
        (lambda: gen.text_to_image([]), "nothing to sample"),
        (lambda: gen.text_to_image(["a red circle", " \x0c"]), r"prompt 2 of 2 (' \x0c') is empty"),
        (lambda: gen.inpaint(np.zeros((2, 8, 8), dtype=np.int64), PROMPTS), "2 images but 3 captions"),
        (lambda: gen.inpaint_and_infill(np.zeros((1, 8, 8), dtype=np.int64), PROMPTS[:1]),
         "prompt 1 of 1 ('a red circle') has no [bracketed] words"),
        (lambda: gen.image_to_text(np.zeros((1, 7, 7), dtype=np.int64)), "8x8 code grids"),
        (lambda: gen.image_to_text(np.full((1, 64), 64)), "[0, 64)"),
        (lambda: gen.image_to_text(torch.zeros(1, 3, 16, 16)), "integer ids"),
        (lambda: api.sample(gen, tmp_path / "s", nope=1), "unknown config key 'nope'"),
        (lambda: gen.text_to_image(PROMPTS, config=SampleConfig(candidates=2)), "vltk.api.sample"),
    ]
    for call, words in cases:
        with pytest.raises(VltkError) as err:
            call()
        assert words in str(err.value) and "\n" not in str(err.value)


def test_text_to_image_equals_the_sampler_called_by_hand(root, gen):
    model, _ = load_generator(root / "gen")
    image_tok, contents = load_image_tokenizer(root / "image-tok")
    tokenizer = BPETokenizer.from_artifact(root / "text-tok")
    rows = tokenizer.encode_batch(PROMPTS)
    text = torch.from_numpy(rows).long()
    lengths = torch.from_numpy(text_lengths(rows, tokenizer.eos_id)).long()
    codes = mg.generate_images(model, text, lengths, mg.MAGVLTSampling(), torch.Generator().manual_seed(5))
    grid = contents.grid_size
    with torch.no_grad():
        expected = ((image_tok.decode(codes.view(-1, grid, grid)).clamp(-1, 1) + 1) * 127.5).round()
    expected = expected.to(torch.uint8).permute(0, 2, 3, 1).numpy()

    images = gen.text_to_image(PROMPTS, seed=5)
    assert [image.size for image in images] == [(16, 16)] * 3
    np.testing.assert_array_equal(pixels(images), expected)
    np.testing.assert_array_equal(pixels(gen.text_to_image(PROMPTS, seed=5)), expected)
    assert not np.array_equal(pixels(gen.text_to_image(PROMPTS, seed=6)), expected)


def test_text_to_image_is_what_vltk_sample_writes(root, gen):
    # The stage seeds batch k by seed + its first index: a batch size of 2 splits the prompts into two batches.
    samples = api.sample(gen, root / "samples-batched", prompts=PROMPTS, seed=3, batch_size=2, cpu=True)
    images = gen.text_to_image(PROMPTS, seed=3, config=SampleConfig(batch_size=2))
    np.testing.assert_array_equal(pixels(images), pixels(samples.images()))


def test_image_to_text_equals_the_sampler_called_by_hand(root, gen):
    model, _ = load_generator(root / "gen")
    tokenizer = BPETokenizer.from_artifact(root / "text-tok")
    shards = list(vltk.load(root / "shards").samples("val"))[:3]
    pictures = [Image.open(io.BytesIO(s.image)).convert("RGB") for s in shards]
    image_tok, _ = load_image_tokenizer(root / "image-tok")
    with torch.no_grad():  # the tokenizer's input convention: (B, 3, H, W) in [-1, 1]
        x = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) for p in pictures])).permute(0, 3, 1, 2)
        codes = image_tok.encode(x / 127.5 - 1).reshape(3, -1)
    ids = mg.generate_text(model, codes, mg.MAGVLTSampling(), torch.Generator().manual_seed(0),
                           eos_id=tokenizer.eos_id).ids
    expected = tokenizer.decode_batch(ids.numpy())
    assert gen.image_to_text(codes.numpy(), seed=0) == expected
    assert gen.image_to_text(pictures, seed=0) == expected  # PIL images go through the image tokenizer


def test_inpaint_keeps_the_source_outside_the_block_and_infill_gives_captions(root, gen):
    image_tok, contents = load_image_tokenizer(root / "image-tok")
    grid = contents.grid_size
    source = np.stack([r.image["codes"] for r in list(vltk.load(root / "encoded").records("val"))[:2]]).astype(np.int64)
    with torch.no_grad():
        original = ((image_tok.decode(torch.from_numpy(source)).clamp(-1, 1) + 1) * 127.5).round()
    original = original.to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (2, 16, 16, 3)
    out = pixels(gen.inpaint(source, PROMPTS[:2], seed=0))
    # At 16 px MaskGIT's blur radius is 16 / 16 - 1 = 0: a hard composite; the block is rows / cols 4..11 of 16 px.
    block = np.zeros((16, 16), dtype=bool)
    block[4:12, 4:12] = True
    assert grid == 8 and out.shape == original.shape
    np.testing.assert_array_equal(out[:, ~block], original[:, ~block])
    # "a red circle" is 3 tokens: infilling regenerates the central floor(3 / 2) = 1 of them, "red", and keeps the rest.
    assert len(BPETokenizer.from_artifact(root / "text-tok").encode(PROMPTS[0])) == 3
    first, second = gen.infill(source, PROMPTS[:2], seed=0)
    assert first.startswith("a ") and first.endswith("circle") and isinstance(second, str)


def test_inpaint_and_infill_completes_the_block_and_the_bracketed_words_together(root, gen):
    source = np.stack([r.image["codes"] for r in list(vltk.load(root / "encoded").records("val"))[:2]]).astype(np.int64)
    captions = ["a [red] circle", "a small blue square above a [green triangle]"]
    images, completed = gen.inpaint_and_infill(source, captions, seed=0)
    # The same images and captions as the sampler called by hand on the rows without brackets and their spans.
    tokenizer = BPETokenizer.from_artifact(root / "text-tok")
    text = torch.from_numpy(tokenizer.encode_batch(["a red circle", "a small blue square above a green triangle"]))
    span = torch.zeros_like(text, dtype=torch.bool)
    span[0, 1], span[1, 6:] = True, text[1, 6:] != tokenizer.eos_id  # "red"; "green triangle" (to the EOS)
    grid = gen.record.grid_size
    region = mg.center_box(grid).expand(2, -1)
    codes, caps = mg.generate_joint(gen.model, torch.from_numpy(source).view(2, -1), region, text.long(), span,
                                    mg.MAGVLTSampling(), torch.Generator().manual_seed(0), eos_id=tokenizer.eos_id)
    assert completed == tokenizer.decode_batch(caps.ids.numpy())
    assert completed[0].startswith("a ") and completed[0].endswith("circle")  # one token between: maybe no word end
    assert completed[1].startswith("a small blue square above a ")
    assert pixels(images).shape == (2, 16, 16, 3)
