"""`make demo-givt` and `make paper-givt`, dry-run: the VAE branch, GIVT's training and sampling, the t / w sweep."""

from __future__ import annotations

from tests.helpers import ROOT, make


def test_make_demo_givt_dry_runs_the_vae_branch_and_the_sweep():
    dry = make("-n", "demo-givt", RUN="build/demo-givt-dry", GIVT_TEMPERATURES="0.8 1.0", GIVT_CFG_WEIGHTS="0 0.4")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.replace("\\\n", " ").splitlines()
    assert any("tokenize image build/demo-givt-dry/shards build/demo-givt-dry/image-tok-vae" in line for line in lines)
    assert any("train-gen build/demo-givt-dry/encoded-vae build/demo-givt-dry/gen-givt" in line for line in lines)
    sweep = sorted(" ".join(line.split()) for line in lines if "givt-sweep/samples-" in line and "vltk sample" in line)
    # t at w = 0 for each temperature, w at the config's t = 0.95 for each weight (t0.95-w0 once).
    points = [(line.split("givt.temperature=")[1].split()[0], line.split("givt.cfg_weight=")[1].split()[0])
              for line in sweep]
    assert sorted(points) == [("0.8", "0"), ("0.95", "0"), ("0.95", "0.4"), ("1.0", "0")]
    compare = next(line for line in lines if "vltk compare" in line)
    assert "build/demo-givt-dry/scores-t2i build/demo-givt-dry/scores-givt-t2i" in compare  # MAGVLT beside GIVT
    assert compare.count("givt-sweep/scores-") == 4
    assert not (ROOT / "build" / "demo-givt-dry").exists()


def test_make_paper_givt_dry_runs_both_variants():
    for variant, guidance in (("causal", ""), ("maskgit", "--set givt.cfg_weight=0.1")):
        dry = make("-n", "paper-givt", DATA="imagenet.jsonl", GIVT=variant, GIVT_RUN="build/givt-dry")
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert any("--config stages/paper/tokenize_image_vae.toml" in line for line in lines)
        assert any(f"train_gen_givt_{variant}.toml" in line for line in lines)
        sample = next(line for line in lines if "vltk sample" in line)
        assert "sample_givt_class.toml" in sample and (guidance in sample if guidance else "cfg_weight" not in sample)
    assert make("-n", "paper-givt").returncode != 0  # DATA is required
