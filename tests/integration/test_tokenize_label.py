"""`vltk tokenize label` end to end on a tiny synth + shard build: the artifact, its record and loader, and bad input
as one line."""

import json
import shutil

import pytest
import torch

from vltk.labeltok.artifact import load_label_tokenizer
from vltk.pipeline import shard, synth
from vltk.records import LabelTokenizerContents

from tests.helpers import TINY_LABEL_TOK, invoke, one_line_error, run_cli, sets

TINY = sets(*TINY_LABEL_TOK, "train.log_every=1")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("label-tok")
    synth.run(synth.SynthConfig(count=16, size=16, seed=2, val_fraction=0.25), root / "raw")
    shard.run(shard.ShardConfig(size=16, image_format="png", shard_size=8), root / "raw", root / "shards", workers=1)
    # The same scenes without their labels: captions.jsonl rows lose their label keys.
    shutil.copytree(root / "raw", root / "bare")
    rows = [json.loads(line) for line in (root / "bare" / "captions.jsonl").read_text().splitlines()]
    drop = ("panoptic", "segments_info", "depth")
    (root / "bare" / "captions.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in row.items() if k not in drop}) + "\n" for row in rows))
    shard.run(shard.ShardConfig(size=16, image_format="png", shard_size=8), root / "bare", root / "bare-shards",
              workers=1)
    return root


@pytest.mark.parametrize("task,bottleneck", [("panoptic", "vae"), ("depth", "vq")])
def test_tokenize_label_publishes_a_loadable_artifact(build, tmp_path, task, bottleneck):
    out = tmp_path / f"label-tok-{task}"
    printed = run_cli("tokenize", "label", build / "shards", out, "--task", task, "--bottleneck", bottleneck,
                      "--cpu", *TINY)
    assert "tokenize-label" in printed
    assert (out / "model.safetensors").is_file() and (out / "recon.png").is_file()
    record = LabelTokenizerContents.read(out)
    assert (record.task, record.bottleneck, record.image_size, record.code_len) == (task, bottleneck, 16, 4)
    assert record.latent_channels == 4 and (record.codebook_size == 8) == (bottleneck == "vq")
    metric = "pq" if task == "panoptic" else "depth"
    assert metric in record.extra and f"{metric}_baseline" in record.extra and record.extra["val_samples"] == 2
    if task == "panoptic":
        assert [c["isthing"] for c in record.categories] == [1, 1, 1, 0] and record.model["num_classes"] == 5
    model, _ = load_label_tokenizer(out)
    labels = torch.zeros(1, 16, 16, 2 if task == "panoptic" else 1, dtype=torch.long)
    z, _ = model.encode(labels)
    assert not model.training and z.shape == (1, 4, 4)


def test_bad_input_is_one_line(build, tmp_path):
    one_line_error(invoke("tokenize", "label", build / "bare-shards", tmp_path / "a", "--task", "panoptic", *TINY),
                   "no panoptic labels")
    one_line_error(invoke("tokenize", "label", build / "shards", tmp_path / "b", "--task", "segmentation", *TINY),
                   "task")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
