"""The paper's GIVT configs (stages/paper/) against GIVT's published operating points (GIVT §4.1): each loads into
its stage's config class, the Default trunk sized by train-gen for ImageNet 256 has Tab. 5's 304M parameters, the
optimiser is big_vision's (wd 1e-4 at lr 1e-3 = AdamW 0.1 on kernels; none for MaskGIT) over 500 epochs with 10%
warm-up, and sampling is at t = 0.95, w = 0.4 (causal) with MaskGIT's 16 steps and t_C = 35."""

import json
from pathlib import Path

import pytest
import torch

from vltk.config import load_config
from vltk.models.givt import GIVT
from vltk.pipeline.sample import SampleConfig
from vltk.pipeline.tokenize_image import TokenizeImageConfig
from vltk.pipeline.train_gen import CONFIGS, resolve
from vltk.records import EncodedContents, Stage
from vltk.train.optim import build_optimizer

PAPER = Path(__file__).resolve().parents[2] / "stages" / "paper"
GIVTS = ("givt-causal", "givt-maskgit")
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k train images


def run_config(kind: str):
    return load_config(CONFIGS[kind], PAPER / f"train_gen_{kind.replace('-', '_')}.toml")


def imagenet_vae_encoded(root: Path) -> Path:
    """The manifest of a VAE-encoded ImageNet 256 artifact as train-gen reads it: 16 x 16 latents of d = 16."""
    root.mkdir()
    contents = EncodedContents(
        kind="vae", splits={"train": {}, "val": {}}, image_size=256, grid_size=16, latent_channels=16,
        text_vocab_size=49408, context_length=64, eos_id=49407, pad_id=49407, sep_id=49408, sot_id=49406,
        bpe_dropout=0.0, image_tokenizer={})
    (root / "manifest.json").write_text(json.dumps({"stage": Stage.ENCODE, "contents": contents.to_dict()}))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, GIVT]:
    """Each paper GIVT as train-gen sizes it for ImageNet 256, on the meta device (no memory, no init cost)."""
    encoded = imagenet_vae_encoded(tmp_path_factory.mktemp("givt") / "encoded")
    out = {}
    for kind in GIVTS:
        cfg, _ = resolve(run_config(kind), encoded)
        with torch.device("meta"):
            out[kind] = GIVT(cfg.model)
    return out


def test_every_paper_givt_config_loads_into_its_class():
    for kind in GIVTS:
        assert run_config(kind).generator == kind
    assert load_config(SampleConfig, PAPER / "sample_givt_class.toml").task == "class"
    assert load_config(TokenizeImageConfig, PAPER / "tokenize_image_vae.toml").model.kind == "vae"


@pytest.mark.parametrize("kind", GIVTS)
def test_default_givt_for_imagenet_has_the_papers_304m_parameters(models, kind):
    model = models[kind]
    cfg = model.cfg
    assert (cfg.image_tokens, cfg.latent_channels, cfg.gmm.mixtures, cfg.gmm.kind) == (256, 16, 16, "diagonal")
    assert (cfg.num_classes, cfg.text_tokens, cfg.variant) == (1000, 0, kind.removeprefix("givt-"))
    assert (cfg.width, cfg.depth, cfg.heads, cfg.mlp_width) == (1024, 24, 16, 4096)  # Tab. 5: BERT-Large
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(304e6, rel=0.01)  # Tab. 5: 304M


def test_dropouts_and_condition_are_the_papers():
    causal, maskgit = (run_config(kind) for kind in GIVTS)
    assert (causal.model.dropout, maskgit.model.dropout) == (0.2, 0.4)
    for cfg in (causal, maskgit):
        assert cfg.model.label_dropout == 0.1  # CFG: labels dropped with p = 0.1
        assert (cfg.condition.text, cfg.condition.num_classes, cfg.condition.class_key) == (False, 1000, "label")


def test_optimiser_is_big_vision_adam_with_decay_on_kernels_only(models):
    causal, maskgit = (run_config(kind) for kind in GIVTS)
    for cfg in (causal, maskgit):
        o = cfg.optim
        assert (o.lr, o.betas, o.eps, o.grad_clip, o.schedule, o.min_lr_ratio) == (
            1e-3, (0.9, 0.95), 1e-8, 1.0, "cosine", 0.0)
        assert cfg.train.batch_size == 8192
        assert cfg.train.steps == 500 * IMAGENET_TRAIN // 8192  # 500 epochs
        assert cfg.optim.warmup_steps == 50 * IMAGENET_TRAIN // 8192  # 50 of them warm-up: 10%
    # big_vision's wd 1e-4 is not scaled by the base lr; AdamW scales it by the lr, so the AdamW value is wd / lr.
    assert causal.optim.weight_decay == pytest.approx(1e-4 / 1e-3)
    assert maskgit.optim.weight_decay == 0.0
    # Kernels only (big_vision's default wd_mults): per block the q, k, v, out and two MLP kernels, plus the token
    # Dense (d -> E) and the head (E -> k + 2kd); not biases, LayerNorms, the label table or the positions.
    e, m, d, k = 1024, 4096, 16, 16
    kernels = 24 * (4 * e * e + 2 * e * m) + d * e + e * (k + 2 * k * d)
    groups = build_optimizer(models["givt-causal"], causal.optim).param_groups
    decayed = [g for g in groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == pytest.approx(0.1)
    assert sum(p.numel() for p in decayed[0]["params"]) == kernels


def test_sampling_is_at_the_papers_operating_point():
    cfg = load_config(SampleConfig, PAPER / "sample_givt_class.toml")
    g = cfg.givt
    assert (g.temperature, g.cfg_weight) == (0.95, 0.4)  # causal 256 px: t = 0.95, DB-CFG w = 0.4
    assert (g.steps, g.choice_temperature) == (16, 35.0)  # MaskGIT 256 px: 16 steps, t_C = 35
    assert (g.beams, g.fans, g.mixture_temperature) == (1, 1, 1.0)
    assert (cfg.split, cfg.count, cfg.candidates) == ("val", 50_000, 1)  # 50k samples, 50 per ImageNet val class


def test_vae_tokenizer_is_givts_beta_vae_at_256px():
    cfg = load_config(TokenizeImageConfig, PAPER / "tokenize_image_vae.toml")
    model = cfg.model
    assert (model.image_size, model.downsample, model.grid_size) == (256, 16, 16)  # 256 px -> 16 x 16
    assert (model.vae.latent_channels, model.vae.kl_weight) == (16, 5e-5)  # d = 16, beta = 5e-5
    assert (model.vae.logvar_min, model.vae.logvar_max) == (-30.0, 20.0)
    assert (model.encoder.channels, model.encoder.channel_mult, model.encoder.num_res_blocks) == (
        128, (1, 1, 2, 2, 4), 2)
    assert model.encoder.attn_resolutions == ()  # no attention layers
    # MaskGIT's tokenizer losses and optimiser: MSE, perceptual 0.1, non-saturating GAN 0.1, Adam (0, 0.99) at 1e-4.
    assert (cfg.loss.pixel, cfg.loss.perceptual_weight, cfg.loss.disc_weight, cfg.loss.disc_loss) == (
        "l2", 0.1, 0.1, "vanilla")
    assert (cfg.optim.lr, cfg.optim.betas, cfg.loss.disc_lr, cfg.loss.disc_betas) == (1e-4, (0.0, 0.99), 1e-4,
                                                                                     (0.0, 0.99))
    assert (cfg.train.batch_size, cfg.train.steps, cfg.flip) == (256, 1_000_000, True)
