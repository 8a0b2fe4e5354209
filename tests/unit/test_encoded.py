"""The encoded artifact's record format: write then read back, dtypes and shapes kept, bad arrays refused."""

import numpy as np
import pytest

from vltk.data.encoded import EncodedSample, MixSel, RecordWriter, codes_dtype, read_records


def _text(n, context=8):
    return np.arange(n * context, dtype=np.int32).reshape(n, context)


def _vq(key, dtype, seed, high):
    codes = np.random.default_rng(seed).integers(0, high, (4, 4)).astype(dtype)
    return EncodedSample(key=key, image={"codes": codes}, text=_text(2), captions=("one", "two"), source="s.json",
                   meta={"objects": [{"shape": "circle"}]})


def _vae(key, seed):
    rng = np.random.default_rng(seed)
    image = {"mean": rng.normal(size=(3, 4, 4)).astype(np.float16),
             "logvar": rng.uniform(-30, 20, (3, 4, 4)).astype(np.float16)}
    return EncodedSample(key=key, image=image, text=_text(1), captions=("only",))


def _same(got, want):
    assert (got.key, got.captions, got.source, got.meta) == (want.key, want.captions, want.source, want.meta)
    assert got.image.keys() == want.image.keys()
    for name, array in want.image.items():
        assert got.image[name].dtype == array.dtype and np.array_equal(got.image[name], array)
    assert got.text.dtype == np.int32 and np.array_equal(got.text, want.text)


def test_codes_dtype_is_uint16_while_every_id_fits():
    assert codes_dtype(16_384) == np.uint16 and codes_dtype(65_536) == np.uint16  # ids 0..65535
    assert codes_dtype(65_537) == np.int32


@pytest.mark.parametrize("make", [
    lambda i: _vq(f"k{i}", np.uint16, i, 16_384),
    lambda i: _vq(f"k{i}", np.int32, i, 100_000),
    lambda i: _vae(f"k{i}", i),
], ids=["vq-uint16", "vq-int32", "vae-float16"])
def test_round_trip_keeps_dtypes_shapes_and_splits_tars(tmp_path, make):
    records = [make(i) for i in range(5)]
    writer = RecordWriter(str(tmp_path / "train-000000-%03d.tar"), maxcount=2)
    for record in records:
        writer.write(record)
    names = writer.close()
    assert names == ["train-000000-000.tar", "train-000000-001.tar", "train-000000-002.tar"]
    assert writer.samples == 5 and writer.captions == sum(len(r.captions) for r in records)
    got = list(read_records([tmp_path / n for n in names]))
    assert len(got) == 5
    for g, want in zip(got, records):
        assert isinstance(g, EncodedSample)
        _same(g, want)


def test_mixsel_round_trip(tmp_path):
    a, b = _vae("left", 1), _vae("right", 2)
    mixed = _vae("mixed", 3).image
    record = MixSel(key="left__right", direction="vertical", image=mixed, a=a, b=b)
    writer = RecordWriter(str(tmp_path / "mixsel-train-000000-%03d.tar"), maxcount=10)
    writer.write(record)
    (got,) = read_records([tmp_path / n for n in writer.close()])
    assert isinstance(got, MixSel) and got.key == "left__right" and got.direction == "vertical"
    for name in ("mean", "logvar"):
        assert got.image[name].dtype == np.float16 and np.array_equal(got.image[name], mixed[name])
    _same(got.a, a)
    _same(got.b, b)


def test_an_empty_writer_makes_no_file(tmp_path):
    assert RecordWriter(str(tmp_path / "x-%03d.tar"), 4).close() == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("image, text, match", [
    ({"codes": np.zeros((4, 4), np.int64)}, _text(1), "uint16 or int32"),
    ({"codes": np.zeros((1, 4, 4), np.uint16)}, _text(1), r"\(h, w\)"),
    ({"mean": np.zeros((3, 4, 4), np.float32), "logvar": np.zeros((3, 4, 4), np.float16)}, _text(1), "float16"),
    ({"mean": np.zeros((3, 4, 4), np.float16)}, _text(1), "holds"),
    ({"codes": np.zeros((4, 4), np.uint16)}, _text(2), "one row per caption"),
    ({"codes": np.zeros((4, 4), np.uint16)}, _text(1).astype(np.int64), "int32"),
])
def test_writer_refuses_arrays_of_the_wrong_dtype_or_shape(tmp_path, image, text, match):
    writer = RecordWriter(str(tmp_path / "x-%03d.tar"), 4)
    with pytest.raises(ValueError, match=match):
        writer.write(EncodedSample(key="k", image=image, text=text, captions=("c",)))
