"""`make paper`: the paper recipe (stages/paper) dry-runs, its configs load and hold the paper's settings, and the whole
chain runs end to end on a tiny COCO-format data set (Karpathy's dataset_coco.json layout, images rendered by synth).

The tiny run uses the real stages/paper/*.toml files; only sizes are shrunk, with the recipe's PAPER_<STAGE>_FLAGS, so
the recipe and its configs cannot drift from what this test runs. Expected values come from the MAGVLT paper
(§4.1, App. A, Tab. 8), its official eval code, CLIP's tokenizer, and the fixture's own captions and splits, never
from the run's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vltk.cli import app
from vltk.config import load_config, read_toml
from vltk.data import shape_labels
from vltk.data.shards import iter_samples
from vltk.imagetok.artifact import load_image_tokenizer
from vltk.imagetok.taming import load_taming_checkpoint
from vltk.imagetok.vqgan import VQGAN
from vltk.pipeline import (encode, sample, score, shard, synth, tokenize_image, tokenize_label, tokenize_text,
                           train_gen)

from tests.factories import taming_shapes
from tests.helpers import ROOT, make, needs_java

PAPER = ROOT / "stages" / "paper"
STAGES = ("shard", "tokenize text", "tokenize image", "encode", "train-gen", "sample", "score")
# Karpathy's split names of the fixture's images, in order; restval trains (the test split is captioning's: MAGVLT's
# feat/eval eval_i2t.py).
KARPATHY = ["train"] * 10 + ["restval"] * 2 + ["val"] * 4 + ["test"] * 4
TINY = {  # shrinks the heavy stages; everything else is stages/paper's
    "PAPER_SHARD_FLAGS": "--size 32",
    "PAPER_IMAGE_FLAGS": "--steps 2 --set train.batch_size=4 --set model.encoder.channels=8 "
                         "--set 'model.encoder.channel_mult=[1, 2, 2]' --set model.encoder.num_res_blocks=1 "
                         "--set 'model.encoder.attn_resolutions=[]' --set model.encoder.z_channels=8 "
                         "--set model.quantizer.codebook_size=64 --set model.quantizer.code_dim=4",
    "PAPER_GEN_FLAGS": "--size tiny --steps 2 --batch-size 4",
    "PAPER_SCORE_FLAGS": "--no-meteor",  # Java takes seconds to start
    "PAPER_WORKERS": "1",
}


def coco_fixture(root: Path) -> tuple[Path, Path, list[dict]]:
    """20 synth scenes (32 px) listed in Karpathy's dataset_coco.json layout, the JSON apart from the images."""
    synth.run(synth.SynthConfig(count=len(KARPATHY), size=32, seed=5), root / "raw")
    rows = [json.loads(line) for line in (root / "raw" / "captions.jsonl").read_text().splitlines()]
    images = [{"filepath": str(Path(row["image"]).parent), "filename": Path(row["image"]).name, "split": split,
               "cocoid": n, "sentences": [{"raw": c} for c in row["captions"]]}
              for n, (row, split) in enumerate(zip(rows, KARPATHY))]
    data = root / "annotations" / "dataset_coco.json"
    data.parent.mkdir()
    data.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return data, root / "raw", images


def test_every_paper_config_loads_and_holds_the_papers_settings():
    classes = {"shard": shard.ShardConfig, "tokenize_text": tokenize_text.TextTokenizerConfig,
               "tokenize_image": tokenize_image.TokenizeImageConfig, "encode": encode.EncodeConfig,
               "sample_t2i": sample.SampleConfig, "sample_i2t": sample.SampleConfig, "score": score.ScoreConfig,
               "tokenize_image_vae": tokenize_image.TokenizeImageConfig, "sample_givt_class": sample.SampleConfig,
               "sample_dense_panoptic": sample.SampleConfig, "sample_dense_depth": sample.SampleConfig,
               "tokenize_label_panoptic": tokenize_label.TokenizeLabelConfig,
               "tokenize_label_depth": tokenize_label.TokenizeLabelConfig}
    cfgs = {}
    for file in sorted(PAPER.glob("*.toml")):
        generator = read_toml(file)["generator"] if file.stem.startswith("train_gen") else None
        cls = train_gen.CONFIGS[generator] if generator else classes[file.stem]
        cfgs[file.stem] = load_config(cls, file)
    assert set(classes) | {"train_gen_magvlt", "train_gen_argvlt"} <= set(cfgs)
    # MAGVLT App. F: resize 256 + centre crop; §4.1 / App. A: CLIP BPE with a 64-token context, BPE-dropout 0.1.
    assert (cfgs["shard"].size, cfgs["shard"].resize) == (256, "center-crop")
    assert (cfgs["tokenize_text"].context_length, cfgs["tokenize_text"].bpe_dropout) == (64, 0.1)
    # taming's f16-16384 VQ-GAN: f16 (5 levels), 16,384 codes, a 128-wide encoder with attention at 16 px.
    image = cfgs["tokenize_image"].model
    assert (image.grid_size, image.quantizer.codebook_size, image.encoder.channels) == (16, 16384, 128)
    assert image.encoder.attn_resolutions == (16,)
    # MAGVLT App. A, Tab. 8: base = 24 x 1024, 8 heads; batch 4,096 for 40K updates; label smoothing 0.1; clipping at 4.
    for name in ("train_gen_magvlt", "train_gen_argvlt"):
        run, model = cfgs[name], cfgs[name].model.sized()  # the TOML names the size preset
        assert (model.depth, model.width, model.heads) == (24, 1024, 8)
        assert (run.train.batch_size, run.train.steps, run.optim.grad_clip) == (4096, 40_000, 4.0)
        assert run.objective.label_smoothing == 0.1
    # feat/eval eval_t2i.py / eval_i2t.py: T2I on 30k val captions, I2T on the Karpathy test split (5,000 images).
    t2i, i2t = cfgs["sample_t2i"], cfgs["sample_i2t"]
    assert (t2i.task, t2i.split, t2i.count) == ("t2i", "val", 30_000)
    assert (i2t.task, i2t.split, i2t.count) == ("i2t", "test", 5000)


def test_make_paper_dry_runs_every_stage_and_needs_data():
    dry = make("-n", "paper", DATA="coco/dataset_coco.json", PAPER_RUN="build/paper-dry")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    for stage in STAGES:
        assert any(f"vltk {stage} " in line for line in lines), stage
    assert sum("vltk sample " in line for line in lines) == sum("vltk score " in line for line in lines) == 2
    assert any("--config stages/paper/tokenize_image.toml" in line for line in lines)  # no VQGAN: trained here
    assert not (ROOT / "build" / "paper-dry").exists()  # -n runs nothing

    given = make("-n", "paper", DATA="d.json", VQGAN="last.ckpt", CLIP="clip.pt", INCEPTION="inception.pth",
                 PAPER_RUN="build/paper-dry")
    assert given.returncode == 0, given.stderr
    assert "tokenize image build/paper-dry/shards build/paper-dry/image-tok --from-taming last.ckpt" in given.stdout
    t2i = next(line for line in given.stdout.splitlines() if "samples-t2i --config" in line)
    assert "--set candidates=32 --set rerank=clip --set clip_weights=clip.pt" in t2i  # MAGVLT §4.1: 32 per caption
    scores = [line for line in given.stdout.splitlines() if "vltk score" in line]
    assert ["inception_weights=inception.pth" in line for line in scores] == ["scores-t2i" in line for line in scores]
    assert all("--set clip_weights=clip.pt" in line for line in scores)  # the CLIP score, both tasks

    missing = make("-n", "paper")
    assert missing.returncode != 0 and "DATA=" in missing.stderr


def test_make_paper_eval_dry_runs_the_released_model_through_the_same_evaluation():
    given = dict(DATA="d.json", VQGAN="last.ckpt", MAGVLT_CKPT="magvlt-it2it-base.ckpt", CLIP="clip.pt",
                 INCEPTION="inception.pth", PAPER_RUN="build/paper-eval-dry")
    dry = make("-n", "paper-eval", **given)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    for stage in ("shard", "tokenize text", "tokenize image", "encode", "import magvlt", "sample", "score"):
        assert any(f"vltk {stage} " in line for line in lines), stage
    assert not any("vltk train-gen" in line for line in lines)  # evaluation only
    run = "build/paper-eval-dry"
    assert f"tokenize image {run}/shards {run}/image-tok --from-taming last.ckpt" in dry.stdout  # the released VQ-GAN
    assert f"vltk import magvlt magvlt-it2it-base.ckpt {run}/encoded {run}/gen-released" in dry.stdout
    samples = [line for line in lines if "vltk sample " in line]
    assert [line.split()[3] for line in samples] == [f"{run}/samples-released-t2i", f"{run}/samples-released-i2t"]
    assert all(f"sample {run}/gen-released " in line for line in samples)
    # make paper's configs and CLIP re-ranking (MAGVLT §4.1: 32 images per caption, 64 captions per image).
    assert "--config stages/paper/sample_t2i.toml --set candidates=32 --set rerank=clip" in samples[0]
    assert "--config stages/paper/sample_i2t.toml --set candidates=64 --set rerank=clip" in samples[1]
    scores = [line for line in lines if "vltk score " in line]
    assert [line.split()[3] for line in scores] == [f"{run}/scores-released-t2i", f"{run}/scores-released-i2t"]
    assert ["inception_weights=inception.pth" in line for line in scores] == [True, False]
    assert not (ROOT / run).exists()

    for missing, named in (("MAGVLT_CKPT", "MAGVLT_CKPT="), ("VQGAN", "VQGAN="), ("DATA", "DATA=")):
        refused = make("-n", "paper-eval", **{k: v for k, v in given.items() if k != missing})
        assert refused.returncode != 0 and named in refused.stderr, missing


@pytest.mark.slow
@needs_java  # the I2T scores' caption metrics
def test_make_paper_runs_end_to_end_on_a_tiny_coco_fixture(tmp_path):
    data, images, fixture = coco_fixture(tmp_path)
    run = tmp_path / "paper"
    done = make("paper", DATA=str(data), IMAGES=str(images), PAPER_RUN=str(run), **TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"reports: {run}/scores-t2i/report.html {run}/scores-i2t/report.html" in done.stdout

    def contents(name: str) -> dict:
        return json.loads((run / name / "manifest.json").read_text())["contents"]

    by_split = {split: [img for img, s in zip(fixture, KARPATHY) if s == split] for split in set(KARPATHY)}
    splits = contents("shards")["splits"]
    assert {s: splits[s]["samples"] for s in splits} == {"train": 12, "val": 4, "test": 4}  # restval trains
    assert [s.captions for s in iter_samples(run / "shards", "test", images=False)] == [
        tuple(x["raw"] for x in img["sentences"]) for img in by_split["test"]]
    text = contents("text-tok")
    assert (text["vocab_size"], text["context_length"]) == (49408, 64)  # CLIP's BPE, MAGVLT's context (MAGVLT §4.1)

    # T2I: the first caption of each val image, in order (eval_t2i.py); I2T: the test images against all their captions.
    t2i = [json.loads(line) for line in (run / "samples-t2i" / "samples.jsonl").read_text().splitlines()]
    assert [row["prompt"] for row in t2i] == [img["sentences"][0]["raw"] for img in by_split["val"]]
    i2t = [json.loads(line) for line in (run / "samples-i2t" / "samples.jsonl").read_text().splitlines()]
    assert [row["references"] for row in i2t] == [[x["raw"] for x in img["sentences"]] for img in by_split["test"]]
    assert all(isinstance(row["caption"], str) for row in i2t)
    assert {"BLEU-4", "CIDEr"} <= set(contents("scores-i2t")["captions"])
    assert (run / "scores-t2i" / "report.html").is_file() and (run / "scores-i2t" / "report.html").is_file()

    # The released-VQ-GAN path on the same shards: a random checkpoint in taming's own key layout becomes a tokenizer
    # artifact whose model is the checkpoint's, tensor for tensor.
    generator = torch.Generator().manual_seed(0)
    layout = dict(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=32, z_channels=8,
                  embed_dim=4, n_embed=32)
    state = {k: torch.randn(shape, generator=generator) for k, shape in taming_shapes(**layout).items()}
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": state}, checkpoint)
    out = tmp_path / "imported"
    result = CliRunner().invoke(app, ["tokenize", "image", str(run / "shards"), str(out), "--from-taming",
                                      str(checkpoint), "--cpu"])
    assert result.exit_code == 0, result.output
    model, tok = load_image_tokenizer(out)
    assert (tok.kind, tok.image_size, tok.grid_size, tok.codebook_size) == ("vqgan", 32, 8, 32)
    assert torch.equal(model.quantizer.codebook, state["quantize.embedding.weight"])
    cfg, mapped = load_taming_checkpoint(checkpoint, image_size=32)
    reference = VQGAN(cfg)
    reference.load_state_dict(mapped)
    x = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    assert torch.equal(model.encode(x), reference.eval().encode(x))
    refused = CliRunner().invoke(app, ["tokenize", "image", str(run / "shards"), str(tmp_path / "bad"),
                                       "--from-taming", str(checkpoint), "--kind", "vae"])
    assert refused.exit_code == 2 and "--from-taming" in refused.output


def test_make_paper_uvim_dry_run_lists_every_stage_with_the_papers_configs():
    """`make -n paper-uvim` prints the UViM chain per task with stages/paper's configs; the GIVT UViM configs hold
    big_vision's values (configs/proj/givt/givt_coco_panoptic.py, givt_nyu_depth.py)."""
    done = make("-n", "paper-uvim", DATA="coco/panoptic_train2017.json", UVIM_TASKS="panoptic depth")
    assert done.returncode == 0, done.stderr
    for task in ("panoptic", "depth"):
        for stage, file in (("tokenize label", f"tokenize_label_{task}"), ("train-gen", f"train_gen_givt_uvim_{task}"),
                            ("sample", f"sample_dense_{task}")):
            assert any(stage in line and f"stages/paper/{file}.toml" in line for line in done.stdout.splitlines())
        assert f"score build/uvim/samples-{task}" in done.stdout
    assert "--size 512" in done.stdout
    for task, (temperature, beams, epochs, train) in {"panoptic": (0.85, 4, 200, 114_191),
                                                      "depth": (0.9, 2, 50, 47_584)}.items():
        gen = load_config(train_gen.CONFIGS["givt-uvim"], PAPER / f"train_gen_givt_uvim_{task}.toml")
        assert (gen.model.sized().width, gen.model.sized().depth, gen.model.encoder.width, gen.model.encoder.depth) \
            == (1024, 24, 1024, 24) and gen.model.gmm.mixtures == 1 and gen.optim.lr_mults == {"encoder.*": 0.1}
        assert abs(gen.train.steps - epochs * train / 512) < 10  # epochs of batch 512 over the train split
        dense = load_config(sample.SampleConfig, PAPER / f"sample_dense_{task}.toml")
        assert (dense.givt.temperature, dense.givt.beams, dense.givt.fans) == (temperature, beams, 8)


def coco_panoptic_fixture(root: Path, count: int = 12) -> tuple[Path, Path]:
    """`count` synth scenes (32 px) in COCO panoptic's layout: annotations/panoptic_train2017.json with its PNGs in
    annotations/panoptic_train2017/ and the pictures in train2017/ (the shapes' categories; no captions)."""
    synth.run(synth.SynthConfig(count=count, size=32, seed=6), root / "raw")
    rows = [json.loads(line) for line in (root / "raw" / "captions.jsonl").read_text().splitlines()]
    ann, pictures = root / "annotations", root / "train2017"
    (ann / "panoptic_train2017").mkdir(parents=True)
    pictures.mkdir()
    images, annotations = [], []
    for n, row in enumerate(rows):
        name = f"{n:012d}"
        (pictures / f"{name}.png").write_bytes((root / "raw" / row["image"]).read_bytes())
        (ann / "panoptic_train2017" / f"{name}.png").write_bytes((root / "raw" / row["panoptic"]).read_bytes())
        images.append({"id": n, "file_name": f"{name}.png", "width": 32, "height": 32})
        annotations.append({"image_id": n, "file_name": f"{name}.png", "segments_info": row["segments_info"]})
    data = ann / "panoptic_train2017.json"
    data.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": shape_labels.CATEGORIES}))
    return data, pictures


UVIM_TINY = {  # shrinks every network; everything else is stages/paper's
    "UVIM_SHARD_FLAGS": "--size 32 --val-fraction 0.25 --image-format png",
    "UVIM_LABEL_FLAGS": "--steps 2 --set train.batch_size=4 --set model.patch_size=8 --set model.width=16 "
                        "--set model.enc_depth=1 --set model.dec_depth=1 --set model.heads=2 --set model.mlp_width=32 "
                        "--set model.code_len=4 --set model.max_instances=4",
    "UVIM_GEN_FLAGS": "--steps 2 --batch-size 4 --set model.width=16 --set model.depth=1 --set model.heads=2 "
                      "--set model.mlp_width=32 --set model.encoder.patch_size=8 --set model.encoder.width=16 "
                      "--set model.encoder.depth=1 --set model.encoder.heads=2 --set model.encoder.mlp_width=32",
    "PAPER_WORKERS": "1",
}


@pytest.mark.slow
def test_make_paper_uvim_runs_end_to_end_on_a_tiny_coco_panoptic_fixture(tmp_path):
    data, images = coco_panoptic_fixture(tmp_path)
    run = tmp_path / "uvim"
    done = make("paper-uvim", DATA=str(data), IMAGES=str(images), UVIM_RUN=str(run), **UVIM_TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def contents(name: str) -> dict:
        return json.loads((run / name / "manifest.json").read_text())["contents"]

    shards = contents("shards-panoptic")
    assert shards["source_format"] == "coco-panoptic" and shards["categories"] == shape_labels.CATEGORIES
    label = contents("label-tok-panoptic")
    assert (label["task"], label["bottleneck"], label["latent_channels"]) == ("panoptic", "vae", 32)  # GIVT §4.2: d 32
    samples = [json.loads(line) for line in (run / "samples-panoptic" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == shards["splits"]["val"]["samples"] > 0
    # big_vision's panoptic setting (configs/proj/givt/givt_coco_panoptic.py): t 0.85, 4 beams of 8 fans.
    assert "beam search (4 beams, 8 fans), t = 0.85" in contents("samples-panoptic")["summary"]
    scores = json.loads((run / "scores-panoptic" / "metrics.json").read_text())
    assert {"prediction", "baseline", "reconstruction"} <= set(scores)
    assert (run / "scores-panoptic" / "report.html").is_file()
