"""`vltk encode` and `vltk decode` end to end on tiny shards with tiny random-init tokenizers (VQ-GAN and beta-VAE).

The tokenizer artifacts are made by hand as the contract describes (`model.safetensors` + a "tokenize-image" manifest),
and every stored array is checked against the model run on the source images on its own.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from PIL import Image

from vltk import artifacts
from vltk.data.encoded import EncodedSample, MixSel, iter_encoded
from vltk.data.mixsel import mix
from vltk.data.shards import iter_samples
from vltk.errors import VltkError
from vltk.pipeline import decode, encode, shard, synth, tokenize_text
from vltk.pipeline.encode import EncodeConfig, to_tensor
from vltk.text.bpe import BPETokenizer

from tests.factories import make_image_tok

SIZE = 16
IMAGES = 30
TAR = 5  # images per input tar: a batch window of 4 leaves one image, which joins the window before it


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("encode")
    synth.run(synth.SynthConfig(count=IMAGES, size=SIZE, seed=1, val_fraction=0.2), root / "raw")
    shard.run(shard.ShardConfig(size=SIZE, image_format="png", shard_size=TAR), root / "raw", root / "shards",
              workers=1)
    tokenize_text.run(tokenize_text.TextTokenizerConfig(vocab_size=600), str(root / "shards"), root / "text-tok")
    vq, vq_model = make_image_tok(root / "vq-tok", "vqgan")
    vae, vae_model = make_image_tok(root / "vae-tok", "vae")
    return {"root": root, "shards": root / "shards", "text": root / "text-tok", "vq": (vq, vq_model),
            "vae": (vae, vae_model)}


def pixels(sample):
    return to_tensor(sample, SIZE, "test")[None]  # (1, 3, H, W)


CFG = EncodeConfig(batch_size=4, mixsel_pairs=2, shard_size=7, seed=3)


@pytest.fixture(scope="module")
def vq_encoded(data):
    out = data["root"] / "vq-encoded"
    encode.run(CFG, data["shards"], data["vq"][0], data["text"], out, cpu=True)
    return out


def test_vq_encode_stores_every_image_and_caption_once(data, vq_encoded):
    _, model = data["vq"]
    tok = BPETokenizer.from_artifact(data["text"])
    contents = artifacts.read_manifest(vq_encoded)["contents"]
    assert contents["kind"] == "vq" and contents["dtype"] == "uint16" and contents["codebook_size"] == 64
    assert contents["grid_size"] == SIZE // 2 and contents["context_length"] == 64
    assert contents["eos_id"] == contents["pad_id"] == tok.eos_id and contents["sep_id"] == tok.sep_id
    assert contents["image_tokenizer"]["kind"] == "vqgan" and contents["image_tokenizer"]["model"]["image_size"] == SIZE
    assert contents["throughput"]["images_per_s"] > 0
    shard_splits = artifacts.read_manifest(data["shards"])["contents"]["splits"]
    for split in ("train", "val"):
        samples = list(iter_samples(data["shards"], split))
        records = list(iter_encoded(vq_encoded, split))
        assert contents["splits"][split]["samples"] == shard_splits[split]["samples"] == len(records)
        assert [r.key for r in records] == [s.key for s in samples]  # each image once, in shard order
        for sample, record in zip(samples, records):
            assert isinstance(record, EncodedSample) and record.captions == sample.captions
            codes = record.image["codes"]
            assert codes.dtype == np.uint16 and codes.shape == (SIZE // 2, SIZE // 2)
            with torch.no_grad():
                assert np.array_equal(codes, model.encode(pixels(sample))[0].numpy())
            assert record.text.dtype == np.int32
            assert np.array_equal(record.text, tok.encode_batch(list(sample.captions)))
    assert "mixsel-val" not in contents["splits"]  # mixsel_splits = ("train",)


def test_mixsel_records_are_the_encoded_pixel_mixes_of_two_records(data, vq_encoded):
    _, model = data["vq"]
    train = {s.key: s for s in iter_samples(data["shards"], "train")}
    records = {r.key: r for r in iter_encoded(vq_encoded, "train")}
    pairs = list(iter_encoded(vq_encoded, "mixsel-train"))
    # An input tar of <= 5 images is one window (4, plus a last single image), so each train image is A of 2 pairs,
    # or of (tar size - 1) in a smaller last tar (none when that tar holds one image: no partner in its window).
    order = list(train)
    tar_size = {key: min(TAR, len(order) - i // TAR * TAR) for i, key in enumerate(order)}
    assert collections.Counter(p.a.key for p in pairs) == {
        key: min(2, tar_size[key] - 1) for key in train if tar_size[key] > 1}
    assert len({p.key for p in pairs}) == len(pairs) == artifacts.read_manifest(vq_encoded)["contents"]["mixsel"][
        "samples"]["mixsel-train"]
    directions = collections.Counter()
    for pair in pairs:
        assert isinstance(pair, MixSel) and pair.a.key != pair.b.key
        # Partners come from the same input tar (the window never crosses one).
        assert order.index(pair.a.key) // TAR == order.index(pair.b.key) // TAR
        for part in (pair.a, pair.b):
            own = records[part.key]
            assert np.array_equal(part.image["codes"], own.image["codes"]) and np.array_equal(part.text, own.text)
            assert part.captions == own.captions
        vertical = torch.tensor([pair.direction == "vertical"])
        with torch.no_grad():
            want = model.encode(mix(pixels(train[pair.a.key]), pixels(train[pair.b.key]), vertical))[0].numpy()
        assert np.array_equal(pair.image["codes"], want)
        directions[pair.direction] += 1
    assert set(directions) == {"horizontal", "vertical"}


@pytest.fixture(scope="module")
def vae_encoded(data):
    out = data["root"] / "vae-encoded"
    encode.run(EncodeConfig(batch_size=8, mixsel_pairs=0), data["shards"], data["vae"][0], data["text"], out, cpu=True)
    return out


def to_uint8(images):
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, as a PNG of the decoded image holds it."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_vae_encode_stores_float16_posteriors(data, vae_encoded):
    out = vae_encoded
    _, model = data["vae"]
    contents = artifacts.read_manifest(out)["contents"]
    assert contents["kind"] == "vae" and contents["latent_channels"] == 4 and contents["dtype"] == "float16"
    assert set(contents["splits"]) == {"train", "val"}  # no MixSel pairs asked for
    samples = list(iter_samples(data["shards"], "val"))
    records = list(iter_encoded(out, "val"))
    assert [r.key for r in records] == [s.key for s in samples]
    for sample, record in zip(samples, records):
        with torch.no_grad():
            mean, logvar = (t[0].numpy() for t in model.encode(pixels(sample)))
        for name, want in (("mean", mean), ("logvar", logvar)):
            got = record.image[name]
            assert got.dtype == np.float16 and got.shape == (4, SIZE // 2, SIZE // 2)
            np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)  # float16 rounding


def test_decode_round_trip_from_the_artifact_and_from_npy(data, vq_encoded, tmp_path):
    tok_path, model = data["vq"]
    out = decode.run(decode.DecodeConfig(split="val", count=3), vq_encoded, tok_path, tmp_path / "decoded")
    records = list(iter_encoded(vq_encoded, "val"))[:3]
    with torch.no_grad():
        codes = torch.from_numpy(np.stack([r.image["codes"] for r in records]).astype(np.int64))  # (3, h, w)
        want = to_uint8(model.decode(codes))
    for i in range(3):
        png = np.asarray(Image.open(out / f"images/{i:05d}.png"))
        assert png.dtype == np.uint8 and png.shape == (SIZE, SIZE, 3) and np.array_equal(png, want[i])
    assert Image.open(out / "grid.png").size == (3 * (SIZE + 2) + 2, SIZE + 2 + 2)
    assert artifacts.read_manifest(out)["contents"]["count"] == 3

    codes = np.stack([r.image["codes"] for r in records])  # (3, h, w) uint16
    np.save(tmp_path / "codes.npy", codes)
    from_npy = decode.run(decode.DecodeConfig(), tmp_path / "codes.npy", tok_path, tmp_path / "from-npy")
    assert np.array_equal(np.asarray(Image.open(from_npy / "images/00002.png")), want[2])
    np.save(tmp_path / "wrong.npy", np.zeros((2, 4, 4), np.uint16))
    with pytest.raises(VltkError, match=r"\(8, 8\)"):
        decode.run(decode.DecodeConfig(), tmp_path / "wrong.npy", tok_path, tmp_path / "bad")
    with pytest.raises(VltkError, match="encoded with the image tokenizer"):
        decode.run(decode.DecodeConfig(), vq_encoded, data["vae"][0], tmp_path / "other-tok")


def test_vae_decode_of_posterior_means_and_of_latents(data, vae_encoded, tmp_path):
    tok_path, model = data["vae"]
    out = decode.run(decode.DecodeConfig(split="train", count=2), vae_encoded, tok_path, tmp_path / "decoded")
    records = list(iter_encoded(vae_encoded, "train"))[:2]
    mean = torch.from_numpy(np.stack([r.image["mean"] for r in records]).astype(np.float32))  # (2, d, h, w)
    z = np.random.default_rng(0).normal(size=(2, 4, SIZE // 2, SIZE // 2)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    from_z = decode.run(decode.DecodeConfig(), tmp_path / "z.npy", tok_path, tmp_path / "from-z")
    with torch.no_grad():
        want_mean, want_z = to_uint8(model.decode(mean)), to_uint8(model.decode(torch.from_numpy(z)))
    for i in range(2):
        assert np.array_equal(np.asarray(Image.open(out / f"images/{i:05d}.png")), want_mean[i])
        assert np.array_equal(np.asarray(Image.open(from_z / f"images/{i:05d}.png")), want_z[i])


def test_a_killed_encode_resumes_to_the_same_output(data, tmp_path, monkeypatch):
    tok = data["vq"][0]
    whole = encode.run(CFG, data["shards"], tok, data["text"], tmp_path / "whole", cpu=True)
    real, calls = encode.encode_tar, []

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    def dies_in_third_tar(cfg, task, tokenizers, work, advance):
        calls.append(task.name)
        # Killed after the third tar's first window was written: a half-written output tar is left behind.
        return real(cfg, task, tokenizers, work, killed if len(calls) == 3 else advance)

    monkeypatch.setattr(encode, "encode_tar", dies_in_third_tar)
    with pytest.raises(KeyboardInterrupt):
        encode.run(CFG, data["shards"], tok, data["text"], tmp_path / "resumed", cpu=True)
    assert not (tmp_path / "resumed").exists()
    assert (tmp_path / "resumed.partial" / f"{calls[2]}-000.tar").is_file()
    done_before = calls[:2]
    calls.clear()
    monkeypatch.setattr(encode, "encode_tar", lambda *a, **k: calls.append(a[1].name) or real(*a, **k))
    resumed = encode.run(CFG, data["shards"], tok, data["text"], tmp_path / "resumed", cpu=True)
    one, two = artifacts.read_manifest(whole)["contents"], artifacts.read_manifest(resumed)["contents"]
    tars = sum(len(s["shards"]) for s in artifacts.read_manifest(data["shards"])["contents"]["splits"].values())
    assert not set(done_before) & set(calls) and len(calls) == tars - 2  # only the unfinished tars
    assert one["splits"] == two["splits"]
    for split in one["splits"].values():
        for name in split["shards"]:
            assert (whole / name).read_bytes() == (resumed / name).read_bytes()
    assert sorted(p.name for p in resumed.iterdir()) == sorted(p.name for p in whole.iterdir())


def test_image_size_mismatch_names_both_sizes(data, tmp_path):
    tok32, _ = make_image_tok(tmp_path / "tok32", "vqgan", size=32)
    with pytest.raises(VltkError, match=r"16 px.*32 px"):
        encode.run(CFG, data["shards"], tok32, data["text"], tmp_path / "out", cpu=True)
    assert not (tmp_path / "out").exists()


def test_rerun_is_a_no_op(data, vq_encoded):
    stamp = (vq_encoded / "manifest.json").stat().st_mtime_ns
    encode.run(CFG, data["shards"], data["vq"][0], data["text"], vq_encoded, cpu=True)
    assert (vq_encoded / "manifest.json").stat().st_mtime_ns == stamp
