"""`vltk tokenize image`: train a VQ-GAN or a beta-VAE on the image shards with the shared training loop.

    vltk tokenize image build/demo/shards build/demo/image-tok --kind vqgan --config stages/demo/tokenize_image.toml
    vltk tokenize image build/paper/shards build/paper/image-tok --from-taming vqgan_imagenet_f16_16384/last.ckpt

The image size comes from the shards' manifest. Training follows taming's VQLPIPSWithDiscriminator (vqperceptual.py):
pixel L1 (or L2) + an optional LPIPS term (only from a VGG16 file the user gives; otherwise off, and the manifest says
so) + the model's own term (VQ commitment/codebook, or beta * KL) + a PatchGAN hinge loss with the adaptive weight.
The discriminator is neither trained nor applied before `disc_start`, then its weight ramps up (vltk's addition:
taming switches it on at once).

The artifact holds `model.safetensors` (EMA weights when EMA is on), `recon.png` (val originals above their
reconstructions), `metrics.jsonl`, `checkpoints/`, and a manifest with what `vltk encode` needs (kind, image and grid
size, codebook size or latent channels, normalisation, the model config) plus PSNR, codebook usage and perplexity on
val and, for shapes data, the judge's accuracy on the originals and on their reconstructions. A killed run continues
from its last checkpoint when re-run with the same config and inputs.

`import_taming` writes the same artifact from a released taming VQ-GAN checkpoint (MAGVLT's
vqgan_imagenet_f16_16384) instead of training one: the architecture is read off the weights, the image size is the
shards', and it is evaluated on the shards' val split like a trained one, so `vltk encode` cannot tell the two apart.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from vltk.artifacts import begin, open_artifact
from vltk.config import config_to_dict
from vltk.data.images import image_grid, to_uint8
from vltk.data.loader import ImageBatches, to_tensor
from vltk.data.shards import decode_image, iter_samples
from vltk.errors import VltkError
from vltk.imagetok import ImageTokenizerConfig, build_image_tokenizer
from vltk.imagetok.artifact import STAGE, WEIGHTS
from vltk.imagetok.discriminator import PatchDiscriminator
from vltk.imagetok.losses import (
    Perceptual, adaptive_weight, build_perceptual, discriminator_loss, gan_factor, generator_loss, pixel_loss,
)
from vltk.imagetok.taming import load_taming_checkpoint
from vltk.metrics.judge import check, detect, parse_caption, summarize
from vltk.train import OptimConfig, Part, TrainConfig, make_accelerator, prepare, save_final_weights, train, unwrap
from vltk.train.launch import begin_shared

@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
    pixel: Literal["l1", "l2"] = "l1"
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0  # LPIPS weight, used only when perceptual_weights is given
    perceptual_weights: str | None = None  # torchvision VGG16 state dict; None turns the perceptual loss off
    disc_weight: float = 0.8  # taming's disc_weight, times the adaptive weight; 0 = no discriminator at all
    disc_start: int = 0  # optimiser step at which the discriminator starts training and the G term starts
    disc_ramp_steps: int = 0  # then the GAN weight ramps linearly from 0 to 1 over this many steps
    disc_loss: Literal["hinge", "vanilla"] = "hinge"
    adaptive_clamp: float = 1e4
    disc_channels: int = 64  # PatchGAN ndf
    disc_layers: int = 3
    disc_norm: Literal["batch", "group"] = "group"  # real and fake go through D as one batch: BatchNorm would mix them
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.5, 0.9)

    def __post_init__(self) -> None:
        for name in ("pixel_weight", "perceptual_weight", "disc_weight", "disc_start", "disc_ramp_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.adaptive_clamp <= 0:
            raise ValueError(f"loss.adaptive_clamp must be > 0, got {self.adaptive_clamp!r}")

    def disc_optim(self, optim: OptimConfig) -> OptimConfig:
        """The discriminator's optimiser: its own lr and betas, a constant schedule, the generator's clipping."""
        return OptimConfig(lr=self.disc_lr, betas=self.disc_betas, weight_decay=0.0, eps=optim.eps,
                           schedule="constant", grad_clip=optim.grad_clip)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizeImageConfig:
    model: ImageTokenizerConfig = dataclasses.field(default_factory=ImageTokenizerConfig)  # image_size: from shards
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train_split: str = "train"
    val_split: str = "val"
    flip: bool = False  # horizontal flips; off because shapes captions say left and right
    recon_images: int = 16  # val images shown in recon.png
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        if self.recon_images < 1 or self.eval_batch_size < 1:
            raise ValueError("recon_images and eval_batch_size must be >= 1")


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [-1, 1], measured on the [0, 1] scale."""
    mse = ((recon.clamp(-1, 1) - target) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


class TokenizerTask:
    """One micro-batch of VQ-GAN / beta-VAE training: reconstruction + model term + GAN (taming's vqperceptual.py)."""

    def __init__(self, parts: dict[str, Part], loss: LossConfig, accelerator: Accelerator,
                 perceptual: Perceptual | None):
        self.parts, self.cfg, self.accelerator, self.perceptual = parts, loss, accelerator, perceptual

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        x = batch.to(self.accelerator.device)
        out = self.parts["model"].module(x)
        recon = out.recon.float()
        pixel = pixel_loss(x, recon, self.cfg.pixel)
        rec = self.cfg.pixel_weight * pixel
        stats = {"pixel": pixel.item()}
        if self.perceptual is not None:
            perceptual = self.perceptual(x, recon).mean()
            rec = rec + self.cfg.perceptual_weight * perceptual
            stats["perceptual"] = perceptual.item()
        loss = rec + sum(out.loss_terms.values())
        # D trains from disc_start on; the G term's weight ramps from 0 to 1 over the following disc_ramp_steps.
        gan = "disc" in self.parts and step >= self.cfg.disc_start
        factor = gan_factor(step, self.cfg.disc_start, self.cfg.disc_ramp_steps) if gan else 0.0
        if factor > 0:
            # G term through the plain discriminator with its weights frozen: no D gradients, no DDP hooks.
            disc = unwrap(self.accelerator, self.parts["disc"].module)
            disc.requires_grad_(False)
            g_loss = generator_loss(self.cfg.disc_loss, disc(recon).float())
            disc.requires_grad_(True)
            last_layer = unwrap(self.accelerator, self.parts["model"].module).last_layer
            d_weight = self.cfg.disc_weight * adaptive_weight(rec, g_loss, last_layer, clamp=self.cfg.adaptive_clamp)
            loss = loss + d_weight * factor * g_loss
            stats.update(g_loss=g_loss.item(), d_weight=float(d_weight), gan_factor=factor)
        self.accelerator.backward(loss)
        if gan:
            # Real and fake in one forward: one DDP reduction per backward.
            logits_real, logits_fake = self.parts["disc"].module(torch.cat([x, recon.detach()])).float().chunk(2)
            d_loss = discriminator_loss(self.cfg.disc_loss, logits_real, logits_fake)
            self.accelerator.backward(d_loss)
            stats.update(d_loss=d_loss.item(), logits_real=logits_real.mean().item(),
                         logits_fake=logits_fake.mean().item())
        stats.update({k: v.item() for k, v in out.loss_terms.items()})
        stats.update({k: float(v) for k, v in out.stats.items()})
        stats.update(loss=loss.item(), psnr=psnr(recon.detach(), x).mean().item())
        return stats


def run(cfg: TokenizeImageConfig, shards: Path, out: Path, *, force: bool = False, cpu: bool = False) -> Path:
    """Train the image tokenizer on `shards` into the artifact `out` (continuing a killed run of the same config)."""
    shards, out = Path(shards), Path(out)
    size = int(open_artifact(shards, "shard")["contents"]["image_size"])
    try:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=size))
    except ValueError as err:
        raise VltkError(f"the tokenizer does not fit the shards' {size} px images: {err}") from None
    accelerator = make_accelerator(cfg.train, cpu=cpu)
    job = begin_shared(accelerator, out, stage=STAGE, config=cfg, inputs={"shards": shards}, force=force, resume=True)
    if job is None:
        return out

    torch.manual_seed(cfg.train.seed)  # the same initial weights on every process
    parts = {"model": (build_image_tokenizer(cfg.model), cfg.optim)}
    if cfg.loss.disc_weight > 0:
        disc = PatchDiscriminator(ndf=cfg.loss.disc_channels, n_layers=cfg.loss.disc_layers, norm=cfg.loss.disc_norm)
        parts["disc"] = (disc, cfg.loss.disc_optim(cfg.optim))
    perceptual = build_perceptual(cfg.loss.perceptual_weights if cfg.loss.perceptual_weight > 0 else None)
    if perceptual is not None:
        perceptual.to(accelerator.device)
    task = TokenizerTask(prepare(accelerator, parts, compile=cfg.train.compile), cfg.loss, accelerator, perceptual)
    data = ImageBatches(shards, cfg.train_split, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                        rank=accelerator.process_index, world_size=accelerator.num_processes, flip=cfg.flip)
    result = train(task, data, cfg.train, accelerator=accelerator, work=job.work,
                   label=f"tokenize image ({cfg.model.kind})")

    if accelerator.is_main_process:
        model = save_final_weights(accelerator, task.parts["model"], result.ema, job.work / WEIGHTS)
        evaluation = evaluate(model, shards, cfg, job.work / "recon.png", accelerator.device)
        trained = {"steps": result.steps, "resumed_from": result.resumed_from,
                   "seconds": round(result.seconds, 1),
                   "images_per_s": round((result.steps - result.resumed_from) * cfg.train.batch_size
                                         / max(result.seconds, 1e-9), 1),
                   "processes": accelerator.num_processes, "precision": accelerator.mixed_precision,
                   "final": result.metrics}
        job.publish(contents=_contents(cfg, perceptual is not None, evaluation, trained))
    accelerator.wait_for_everyone()
    return out


def import_taming(cfg: TokenizeImageConfig, checkpoint: Path, shards: Path, out: Path, *, force: bool = False,
                  cpu: bool = False) -> Path:
    """The taming VQ-GAN at `checkpoint` as a tokenizer artifact `out` for the shards' images, evaluated on their val
    split. Of `cfg` only the evaluation keys count; the model is the checkpoint's and nothing is trained."""
    shards, out, checkpoint = Path(shards), Path(out), Path(checkpoint)
    size = int(open_artifact(shards, "shard")["contents"]["image_size"])
    model_cfg, state = load_taming_checkpoint(checkpoint, image_size=size)
    cfg = dataclasses.replace(cfg, model=model_cfg)
    job = begin(out, stage=STAGE, config=cfg, inputs={"shards": shards, "checkpoint": checkpoint}, force=force)
    if job is None:
        return out
    model = build_image_tokenizer(model_cfg)
    model.load_state_dict(state)  # strict: load_taming_checkpoint already matched every key and shape
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, job.work / WEIGHTS)
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    evaluation = evaluate(model.to(device).eval(), shards, cfg, job.work / "recon.png", device)
    imported = {"imported": "taming", "checkpoint": str(checkpoint)}
    return job.publish(contents=_contents(cfg, True, evaluation, imported))  # taming trained with LPIPS


def _val_batches(shards: Path, split: str, size: int) -> Iterator[tuple[torch.Tensor, list[np.ndarray], list]]:
    """(images (b, 3, H, W) in [-1, 1], the same as uint8 (H, W, 3) arrays, their samples) of `split`, in order."""
    samples: list = []
    for sample in iter_samples(shards, split):
        samples.append(sample)
        if len(samples) == size:
            yield _stack(samples)
            samples = []
    if samples:
        yield _stack(samples)


def _stack(samples: list) -> tuple[torch.Tensor, list[np.ndarray], list]:
    images = [decode_image(s) for s in samples]
    return torch.stack([to_tensor(i) for i in images]), [np.asarray(i) for i in images], samples


@torch.no_grad()
def evaluate(model: torch.nn.Module, shards: Path, cfg: TokenizeImageConfig, grid_file: Path,
             device: torch.device) -> dict[str, Any]:
    """PSNR, codebook usage / perplexity (VQ) and the judge on `cfg.val_split`; writes the reconstruction grid."""
    vq = cfg.model.kind == "vqgan"
    psnrs, codes, grid = [], [], []
    originals, reconstructed = [], []
    for x, pixels, samples in _val_batches(shards, cfg.val_split, cfg.eval_batch_size):
        x = x.to(device)
        if vq:
            batch_codes = model.encode(x)  # (b, h, w)
            recon = model.decode(batch_codes).float().clamp(-1, 1)
            codes.append(batch_codes.cpu())
        else:
            mean, _ = model.encode(x)
            recon = model.decode(mean).float().clamp(-1, 1)
        psnrs.append(psnr(recon, x).cpu())
        if sum(len(o) for o, _ in grid) < cfg.recon_images:
            grid.append((x[: cfg.recon_images].cpu(), recon[: cfg.recon_images].cpu()))
        for original, rebuilt, sample in zip(pixels, to_uint8(recon), samples):
            if "objects" not in sample.meta:
                continue
            seen, rebuilt_seen = detect(original), detect(rebuilt)
            for caption in sample.captions:
                spec = parse_caption(caption)
                originals.append(check(caption, spec, seen))
                reconstructed.append(check(caption, spec, rebuilt_seen))
    if not psnrs:
        raise VltkError(f"{shards} has no images in its '{cfg.val_split}' split to evaluate the tokenizer on")
    _write_grid(grid, cfg.recon_images, grid_file)
    result: dict[str, Any] = {"psnr": round(float(torch.cat(psnrs).mean()), 3), "val_images": len(torch.cat(psnrs))}
    if vq:
        all_codes = torch.cat(codes)
        result["codebook_usage"] = round(model.codebook_usage(all_codes), 4)
        result["perplexity"] = round(model.perplexity(all_codes), 2)
    if originals:
        on_originals, on_recon = summarize(originals), summarize(reconstructed)
        result["judge"] = {
            "originals": {k: round(v, 4) for k, v in on_originals.items()},
            "reconstructions": {k: round(v, 4) for k, v in on_recon.items()},
            "ratio": round(on_recon["whole"] / on_originals["whole"], 4) if on_originals["whole"] else None,
        }
    return result


def _write_grid(batches: list[tuple[torch.Tensor, torch.Tensor]], count: int, file: Path) -> None:
    """Originals in the top row, their reconstructions below; small images are enlarged (nearest) to >= 64 px."""
    originals = torch.cat([o for o, _ in batches])[:count]
    recon = torch.cat([r for _, r in batches])[:count]
    image_grid(to_uint8(torch.cat([originals, recon])), columns=len(originals), min_side=64).save(file)


def _contents(cfg: TokenizeImageConfig, perceptual: bool, evaluation: dict[str, Any], trained: dict[str, Any],
              ) -> dict[str, Any]:
    model = cfg.model
    vq = model.kind == "vqgan"
    size = {"codebook_size": model.quantizer.codebook_size} if vq else {"latent_channels": model.vae.latent_channels}
    summary = f"{model.kind} {model.grid_size}x{model.grid_size} grid of "
    summary += f"{model.quantizer.codebook_size} codes" if vq else f"{model.vae.latent_channels}-d latents"
    summary += f", PSNR {evaluation['psnr']:.1f} dB"
    if vq:
        summary += f", usage {evaluation['codebook_usage']:.0%}"
    if "judge" in evaluation:
        judge = evaluation["judge"]
        summary += (f", judge {judge['reconstructions']['whole']:.1%} on reconstructions vs "
                    f"{judge['originals']['whole']:.1%} on originals")
    return {
        "kind": model.kind,
        "image_size": model.image_size,
        "grid_size": model.grid_size,
        "downsample": model.downsample,
        **size,
        "normalization": "[-1, 1]",
        "model": config_to_dict(model),
        "perceptual": "lpips-vgg16" if perceptual else "off",
        **evaluation,
        "train": trained,
        "summary": summary,
    }
