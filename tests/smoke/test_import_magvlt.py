"""`vltk import magvlt` end to end: a random checkpoint in the released layout (Lightning's file, MAGVLT-base's width
with one layer, the encoded data's vocabularies) becomes a generator artifact that `vltk sample` and `vltk score` take
as they take a trained one; data made with other tokenizers is refused in one line."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from vltk.artifacts import upstream
from vltk.models.artifact import load_generator
from vltk.models.magvlt import MAGVLTConfig
from vltk.models.official import official_shapes, to_vltk
from vltk.records import EncodedContents

from tests.factories import tiny_encoded
from tests.helpers import invoke


def cli(*args) -> tuple[int, str]:
    result = invoke(*args)
    return result.exit_code, result.output


def released_layout(encoded, context: int | None = None) -> dict[str, torch.Tensor]:
    """Random weights under the official keys for `encoded`'s sizes, at base's width (the heads come from it)."""
    data = EncodedContents.read(encoded)
    cfg = MAGVLTConfig(size="base", depth=1, image_vocab=data.codebook_size, text_vocab=data.text_vocab_size,
                       image_tokens=data.grid_size ** 2, text_tokens=context or data.context_length)
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=g) * 0.05 for k, shape in official_shapes(cfg).items()}


def test_a_released_checkpoint_samples_and_scores_like_a_trained_one(tmp_path):
    encoded = tiny_encoded(tmp_path)
    state = released_layout(encoded)
    codebook = load_file(str(upstream(encoded, "image_tok") / "model.safetensors"))["quantizer.codebook"]
    state["model_vqvae.quantize.embedding.weight"] = codebook  # the VQ-GAN the data was encoded with
    checkpoint = tmp_path / "magvlt-it2it-base.ckpt"
    torch.save({"state_dict": state, "epoch": 7, "global_step": 40_000}, checkpoint)

    code, output = cli("import", "magvlt", checkpoint, encoded, tmp_path / "gen")
    assert code == 0, output
    manifest = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    contents = manifest["contents"]
    assert manifest["stage"] == "train-gen" and contents["generator"] == "magvlt"
    assert (contents["model"]["size"], contents["model"]["depth"], contents["model"]["heads"]) == ("base", 1, 8)
    assert contents["model"]["blind_prefix"] is False and contents["model"]["official_positions"] is True
    assert contents["imported"] == {"from": "kakaobrain/magvlt", "checkpoint": str(checkpoint)}
    assert set(manifest["inputs"]) == {"encoded", "checkpoint"}
    model, record = load_generator(tmp_path / "gen")
    mapped = to_vltk(state, model.cfg)
    assert all(torch.equal(value, mapped[key]) for key, value in model.state_dict().items())
    assert contents["parameters"] == sum(p.numel() for p in model.parameters())

    for task in ("t2i", "i2t"):
        code, output = cli("sample", tmp_path / "gen", tmp_path / f"samples-{task}", "--task", task, "--count", 2,
                           "--cpu", "--set", "batch_size=2")
        assert code == 0, output
    rows = [json.loads(line) for line in (tmp_path / "samples-i2t" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(row["caption"], str) and row["references"] for row in rows)
    code, output = cli("score", tmp_path / "samples-i2t", tmp_path / "scores-i2t", "--cpu", "--no-meteor")
    assert code == 0, output
    assert "CIDEr" in json.loads((tmp_path / "scores-i2t" / "manifest.json").read_text())["contents"]["captions"]
    code, output = cli("compare", tmp_path / "scores-i2t", tmp_path / "scores-i2t", tmp_path / "compare")
    assert code == 0, output
    columns = json.loads((tmp_path / "compare" / "manifest.json").read_text())["contents"]["columns"]
    assert all(label.startswith("i2t: magvlt base, released weights, ") for label in columns)  # no training steps

    # Data encoded with another VQ-GAN, or at another text context, is refused before anything is written.
    state["model_vqvae.quantize.embedding.weight"] = codebook + 1
    torch.save({"state_dict": state}, checkpoint)
    code, output = cli("import", "magvlt", checkpoint, encoded, tmp_path / "other")
    assert code == 2 and "was trained on another VQ-GAN" in output and "--from-taming" in output
    torch.save(released_layout(encoded, context=64), checkpoint)
    code, output = cli("import", "magvlt", checkpoint, encoded, tmp_path / "other")
    assert code == 2 and "text context 64 in the weights, 24 in the data" in output
    assert not (tmp_path / "other").exists()
