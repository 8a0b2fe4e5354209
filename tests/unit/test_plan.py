"""`vltk plan`: the transformer FLOPs formula against torch's own FLOP counter, the convolution count by hand, and the
plan of stages/paper as a user runs it."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from vltk.cli import app
from vltk.models.magvlt import MAGVLT, Inputs, MAGVLTConfig
from vltk.pipeline.plan import PEAK, counted, pass_flops

N, C, VI, VT, D, L = 16, 8, 32, 40, 64, 2


def test_pass_flops_is_what_torch_counts():
    """A MAGVLT forward with every image position queried: torch's FlopCounterMode (attention through the math
    kernel, so that its two matmuls are counted) sees exactly 2 P T + 4 L T^2 d + 2 d (d + V) N."""
    torch.manual_seed(0)
    model = MAGVLT(MAGVLTConfig(size="tiny", width=D, depth=L, heads=4, dropout=0.0, attn_dropout=0.0,
                                image_vocab=VI, text_vocab=VT, image_tokens=N, text_tokens=C)).eval()
    x = Inputs("t2i", torch.zeros(1, N, dtype=torch.long), torch.ones(1, N, dtype=torch.bool),
               torch.zeros(1, C, dtype=torch.long), torch.zeros(1, C, dtype=torch.bool), torch.tensor([C]))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, image_query=torch.ones(1, N, dtype=torch.bool))
    assert pass_flops(model.transformer, D, L, 4 + N + C, N, VI) == counter.get_total_flops()
    # By hand: 12 d^2 weights a layer; 28 tokens.
    assert pass_flops(model.transformer, D, L, 28, N, VI) == 28 * (2 * 12 * D * D * L + 4 * L * 28 * D) + 2 * D * (D + VI) * N


def test_a_convolution_counted_on_the_meta_device():
    # 2 x (3 x 3 x 3) multiply-adds per output value, 8 x 16 x 16 outputs.
    assert counted(lambda: torch.nn.Conv2d(3, 8, 3, padding=1), 1, 3, 16, 16) == 2 * 27 * 8 * 16 * 16


def test_plan_of_the_paper_configs(tmp_path):
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["plan", "--gpu", "a100", "--gpus", "16", "--mfu", "0.5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    stages = {s["stage"]: s for s in plan["stages"]}
    assert list(stages) == ["tokenize image", "encode", "train-gen magvlt", "train-gen argvlt", "sample t2i",
                            "sample i2t", "score"]
    magvlt = stages["train-gen magvlt"]
    assert magvlt["steps"] == 40_000 and magvlt["samples"] == 40_000 * 4096  # stages/paper/train_gen_magvlt.toml
    # UnrollMask on T2I and I2T steps (9 of 10) and MixSel every step: 2.9 passes of 4 + 256 + 64 tokens a sample.
    assert magvlt["tokens"] == pytest.approx(40_000 * 4096 * 2.9 * 324)
    for s in plan["stages"]:
        assert s["gpu_hours"] == pytest.approx(s["flops"] / (PEAK["a100"] * 0.5) / 3600, abs=0.01)
        assert s["wall_hours"] == pytest.approx(s["gpu_hours"] / 16, abs=0.01)
    assert plan["total"]["flops"] == pytest.approx(sum(s["flops"] for s in plan["stages"]))
    # MAGVLT-base (Tab. 8: 1024 wide, 24 deep; ~300M in its blocks) trains in ~355 EFLOPs, by far the biggest stage.
    assert 3e20 < magvlt["flops"] < 4e20 and magvlt["flops"] == max(s["flops"] for s in plan["stages"])
    assert "train-gen magvlt" in result.output


def test_plan_with_the_released_vqgan_and_bad_settings(tmp_path):
    out = tmp_path / "plan.json"
    assert CliRunner().invoke(app, ["plan", "--set", "taming=true", "--json", str(out)]).exit_code == 0
    assert "tokenize image" not in {s["stage"] for s in json.loads(out.read_text())["stages"]}
    for flags, message in ((["--mfu", "0"], "mfu must be in (0, 1]"), (["--gpu", "tpu"], "gpu must be one of"),
                           (["--stages", str(tmp_path)], "tokenize_image.toml not found")):
        result = CliRunner().invoke(app, ["plan", *flags])
        assert result.exit_code == 2 and message in result.output, result.output
