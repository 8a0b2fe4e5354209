"""UViM stage II end to end on a tiny synth + shard build: `vltk train-gen --model givt-uvim` on a VAE and a VQ label
tokenizer, `vltk sample --task dense` (its machine formats read back), `vltk score` of dense samples, and bad input as
one line."""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from vltk.data import depth as depth_png
from vltk.data.dense import DenseBatches, dense_categories
from vltk.data import panoptic as panoptic_png
from vltk.labeltok.artifact import load_label_tokenizer
from vltk.models.artifact import load_generator
from vltk.pipeline.tokenize_label import label_spec
from vltk.records import GeneratorContents

from tests.factories import artifact_files, tiny_uvim
from tests.helpers import TINY_UVIM, invoke, one_line_error, run_cli, sets

GEN = ["--model", "givt-uvim", "--cpu", *sets(*TINY_UVIM)]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("uvim")
    for task, bottleneck in (("panoptic", "vae"), ("depth", "vae"), ("panoptic", "vq")):
        tiny_uvim(root, task, bottleneck)
    return root


@pytest.mark.parametrize("task,bottleneck", [("panoptic", "vae"), ("panoptic", "vq")])
def test_train_gen_uvim_picks_the_model_by_the_bottleneck(build, task, bottleneck):
    gen = build / f"gen-{task}-{bottleneck}"
    record = GeneratorContents.read(gen)
    assert record.generator == "givt-uvim" and record.extra["bottleneck"] == bottleneck
    assert record.image_tokens == 4 and record.image_size == 16
    # VAE: 4-d soft tokens under a GMM; VQ: the tokenizer's 8 codes under a softmax (UViM's baseline)
    assert (record.latent_channels, record.image_vocab) == ((4, None) if bottleneck == "vae" else (None, 8))
    model, _ = load_generator(gen)
    assert model.encoder is not None and model.cfg.encoder.image_size == 16 and not model.training
    lines = [json.loads(line) for line in (gen / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(np.isfinite(line["loss"]) for line in lines)
    # the encoder trains at lr x 0.1 (big_vision's lr_mults): warm-up step 0 of 1 is at the peak lr 1e-3
    assert lines[0]["lr/model"] == pytest.approx(1e-3)
    if bottleneck == "vq":  # a fresh model predicts uniform logits: the first loss is log V
        assert lines[0]["loss"] == pytest.approx(np.log(8), abs=1e-3)


@pytest.mark.parametrize("task,bottleneck", [("panoptic", "vae"), ("depth", "vae"), ("panoptic", "vq")])
def test_sample_dense_formats_round_trip_and_score(build, tmp_path, task, bottleneck):
    gen, samples, scores = build / f"gen-{task}-{bottleneck}", tmp_path / "samples", tmp_path / "scores"
    beams = sets("givt.beams=2", "givt.fans=2") if bottleneck == "vq" else sets("givt.temperature=0.9")
    run_cli("sample", gen, samples, "--task", "dense", "--count", "3", "--cpu", *sets("batch_size=2"), *beams)
    rows = [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines()]
    assert [(r["index"], r["seed"]) for r in rows] == [(0, 0), (1, 0), (2, 2)]  # batch k: seed + its first index
    assert (samples / "grid.png").is_file() and all((samples / r["file"]).is_file() for r in rows)
    if task == "panoptic":
        listed = json.loads((samples / "panoptic.json").read_text())["annotations"]
        assert [a["image_id"] for a in listed] == [r["key"] for r in rows]
        for row, annotation in zip(rows, listed):
            ids = panoptic_png.decode_png((samples / row["files"]["panoptic"]).read_bytes())
            # every non-void id of the PNG is one listed segment with its pixel count, and nothing else is listed
            found, counts = np.unique(ids[ids > 0], return_counts=True)
            assert {s["id"]: s["area"] for s in annotation["segments_info"]} == dict(zip(found.tolist(),
                                                                                            counts.tolist()))
    else:
        units = depth_png.decode_png((samples / rows[0]["files"]["depth"]).read_bytes())
        assert units.dtype == np.uint16 and units.shape == (16, 16) and units.max() <= 10_000  # <= max_depth 10 m
    run_cli("score", samples, scores, "--no-meteor", "--cpu")
    metrics = json.loads((scores / "metrics.json").read_text())
    assert metrics["count"] == 3 and (scores / "report.html").is_file()
    for kind in ("prediction", "baseline", "reconstruction"):
        if task == "panoptic":
            assert set(metrics[kind]) >= {"All", "Things", "Stuff"} and 0 <= metrics[kind]["All"]["pq"] <= 1
        else:
            assert metrics[kind]["rmse"] >= 0 and 0 <= metrics[kind]["delta1"] <= 1


def test_dense_batches_carry_their_places_in_the_global_batch(build):
    """Global batch k holds stream positions [4k, 4k + 4) whatever the process count, and two ranks' shares are the
    one-process batch split in two: UViM's posterior noise is keyed by these places (tests/unit/test_uvim_objective)."""
    label_model, _ = load_label_tokenizer(build / "tok-panoptic-vae", "cpu")
    spec = label_spec(label_model.cfg, dense_categories(build / "shards"))

    def first_batches(rank: int, world: int) -> list:
        data = DenseBatches(build / "shards", "train", spec, batch_size=4, seed=0, rank=rank, world_size=world)
        return list(itertools.islice(data(position=4), 2))  # from a resumed position: global batches 1 and 2

    whole, halves = first_batches(0, 1), list(zip(first_batches(0, 2), first_batches(1, 2)))
    assert [b[2].tolist() for b in whole] == [[4, 5, 6, 7], [8, 9, 10, 11]]
    for one, (r0, r1) in zip(whole, halves):
        for a, b, c in zip(one, r0, r1):
            assert torch.equal(a, torch.cat([b, c]))


def test_a_killed_dense_run_resumes_its_missing_batches(build, tmp_path, monkeypatch):
    """A run that dies after its first batch leaves that batch's files and record in OUT.partial; the next run draws
    only the others and writes what an uninterrupted run writes, file for file."""
    from vltk.errors import VltkError
    from vltk.pipeline import sample_dense

    gen, flags = build / "gen-panoptic-vae", ["--task", "dense", "--split", "train", "--count", "5", "--cpu",
                                          *sets("batch_size=2")]
    run_cli("sample", gen, tmp_path / "whole", *flags)
    drawn, real = [], sample_dense.predict

    def dies_after_one(*args, **kwargs):
        if drawn:
            raise VltkError("killed")
        drawn.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(sample_dense, "predict", dies_after_one)
    assert "killed" in one_line_error(invoke("sample", gen, tmp_path / "resumed", *flags))
    assert [p.name for p in (tmp_path / "resumed.partial" / "batches").iterdir()] == ["0000000.json"]
    drawn.clear()

    def counts(*args, **kwargs):
        drawn.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(sample_dense, "predict", counts)
    assert "resuming" in run_cli("sample", gen, tmp_path / "resumed", *flags)
    assert drawn == [2, 1]  # 5 maps in batches of 2: the first was on disk
    assert artifact_files(tmp_path / "whole") == artifact_files(tmp_path / "resumed")
    assert not (tmp_path / "resumed.partial").exists()


def test_bad_input_is_one_line(build, tmp_path, tiny_magvlt):
    one_line_error(invoke("sample", tiny_magvlt / "gen", tmp_path / "a", "--task", "dense"), "magvlt cannot do dense")
    one_line_error(invoke("sample", build / "gen-depth-vae", tmp_path / "b", "--task", "t2i"),
                   "givt-uvim cannot do t2i")
    gone = tmp_path / "tok"
    shutil.copytree(build / "tok-depth-vae", gone)
    manifest = json.loads((gone / "manifest.json").read_text())
    manifest["inputs"]["shards"].update(path="../no-shards", absolute=str(tmp_path / "no-shards"))
    (gone / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(invoke("train-gen", gone, tmp_path / "c", *GEN), "gone")
    one_line_error(invoke("train-gen", build / "tok-depth-vae", tmp_path / "d", *GEN,
                          "--set", "encoder_weights=/no/vit.safetensors"), "not found")
    assert not any((tmp_path / name).exists() for name in "abcd")
