"""`vltk tokenize image`: train a VQ-GAN or a beta-VAE on the image shards with the shared training loop.

    vltk tokenize image build/demo/shards build/demo/image-tok --kind vqgan --config stages/demo/tokenize_image.toml
    vltk tokenize image build/paper/shards build/paper/image-tok --from-taming vqgan_imagenet_f16_16384/last.ckpt

The image size comes from the shards' manifest. Training follows taming's VQLPIPSWithDiscriminator (vqperceptual.py):
pixel L1 (or L2) + an optional LPIPS term (only from a VGG16 file the user gives; otherwise off, and the manifest says
so) + the model's own term (VQ commitment/codebook, or beta * KL) + a PatchGAN hinge loss with the adaptive weight.
The discriminator is neither trained nor applied before `disc_start`, then its weight ramps up (vltk's addition:
taming switches it on at once).

The artifact holds `model.safetensors` (EMA weights when EMA is on), `recon.png` (val originals above their
reconstructions), `metrics.jsonl`, `checkpoints/`, `trackers/` when `train.log_with` names TensorBoard or MLflow
(the metrics, the config and `recon.png` at the last step: `vltk.train.tracking`), and a manifest with what
`vltk encode` needs (kind, image and grid size, codebook size or latent channels, normalisation, the model config) plus
PSNR, codebook usage and perplexity on val and, for shapes data, the judge's accuracy on the originals and on their
reconstructions. A killed run continues from its last checkpoint when re-run with the same config and inputs.

`import_taming` writes the same artifact from a released taming VQ-GAN checkpoint (MAGVLT's
vqgan_imagenet_f16_16384) instead of training one: the architecture is read off the weights, the image size is the
shards', and it is evaluated on the shards' val split like a trained one, so `vltk encode` cannot tell the two apart.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import save_file

from vltk.artifacts import begin
from vltk.config import config_to_dict, require_range
from vltk.data.images import image_grid, to_uint8
from vltk.data.loader import ImageBatches, to_tensor
from vltk.data.shards import decode_image, iter_samples
from vltk.errors import VltkError
from vltk.imagetok import ImageTokenizerConfig, build_image_tokenizer
from vltk.imagetok.artifact import STAGE, WEIGHTS
from vltk.imagetok.discriminator import PatchDiscriminator
from vltk.imagetok.losses import build_perceptual
from vltk.imagetok.taming import load_taming_checkpoint
from vltk.metrics.judge import ReconstructionJudge
from vltk.objectives.imagetok import LossConfig, TokenizerTask, psnr
from vltk.train import OptimConfig, TrainConfig, make_accelerator, prepare, save_final_weights, train
from vltk.train.launch import begin_shared, local_device
from vltk.train.tracking import log_image, tracking
from vltk.records import ImageTokenizerContents, ShardsContents

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
        require_range(self, "recon_images", "eval_batch_size")


def run(cfg: TokenizeImageConfig, shards: Path, out: Path, *, from_taming: Path | None = None, force: bool = False,
        cpu: bool = False) -> Path:
    """Train the image tokenizer on `shards` into the artifact `out` (continuing a killed run of the same config), or
    with `from_taming` import that released checkpoint instead (`import_taming`)."""
    if from_taming is not None:
        return import_taming(cfg, from_taming, shards, out, force=force, cpu=cpu)
    shards, out = Path(shards), Path(out)
    size = ShardsContents.read(shards).image_size
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
    with tracking(accelerator, config_to_dict(cfg), job.work, project=f"vltk-{STAGE}", run=out.name):
        result = train(task, data, cfg.train, accelerator=accelerator, work=job.work,
                       label=f"tokenize image ({cfg.model.kind})")
        if accelerator.is_main_process:
            model = save_final_weights(accelerator, task.parts["model"], result.ema, job.work / WEIGHTS)
            evaluation = evaluate(model, shards, cfg, job.work / "recon.png", accelerator.device)
            log_image(accelerator, job.work / "recon.png", result.steps)  # the final weights' reconstructions

    if accelerator.is_main_process:  # after the trackers closed their files in the work folder about to be renamed
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
    size = ShardsContents.read(shards).image_size
    model_cfg, state = load_taming_checkpoint(checkpoint, image_size=size)
    cfg = dataclasses.replace(cfg, model=model_cfg)
    job = begin(out, stage=STAGE, config=cfg, inputs={"shards": shards, "checkpoint": checkpoint}, force=force)
    if job is None:
        return out
    model = build_image_tokenizer(model_cfg)
    model.load_state_dict(state)  # strict: load_taming_checkpoint already matched every key and shape
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, job.work / WEIGHTS)
    device = local_device(cpu)
    evaluation = evaluate(model.to(device).eval(), shards, cfg, job.work / "recon.png", device)
    imported = {"imported": "taming", "checkpoint": str(checkpoint)}
    return job.publish(contents=_contents(cfg, True, evaluation, imported))  # taming trained with LPIPS


def _val_batches(shards: Path, split: str, size: int) -> Iterator[tuple[torch.Tensor, list[np.ndarray], list]]:
    """(images (b, 3, H, W) in [-1, 1], the same as uint8 (H, W, 3) arrays, their samples) of `split`, in order."""
    samples = iter_samples(shards, split)
    while chunk := list(itertools.islice(samples, size)):
        yield _stack(chunk)


def _stack(samples: list) -> tuple[torch.Tensor, list[np.ndarray], list]:
    images = [decode_image(s) for s in samples]
    return torch.stack([to_tensor(i) for i in images]), [np.asarray(i) for i in images], samples


@torch.no_grad()
def evaluate(model: torch.nn.Module, shards: Path, cfg: TokenizeImageConfig, grid_file: Path,
             device: torch.device) -> dict[str, Any]:
    """PSNR, codebook usage / perplexity (VQ) and the judge on `cfg.val_split`; writes the reconstruction grid."""
    vq = cfg.model.kind == "vqgan"
    psnrs, codes, grid = [], [], []
    judged = ReconstructionJudge()  # shapes data only: its samples list their objects
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
            if "objects" in sample.meta:
                judged.add(original, rebuilt, sample.captions)
    if not psnrs:
        raise VltkError(f"{shards} has no images in its '{cfg.val_split}' split to evaluate the tokenizer on")
    _write_grid(grid, cfg.recon_images, grid_file)
    result: dict[str, Any] = {"psnr": round(float(torch.cat(psnrs).mean()), 3), "val_images": len(torch.cat(psnrs))}
    if vq:
        all_codes = torch.cat(codes)
        result["codebook_usage"] = round(model.codebook_usage(all_codes), 4)
        result["perplexity"] = round(model.perplexity(all_codes), 2)
    if (judge := judged.result()) is not None:
        result["judge"] = judge
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
    return ImageTokenizerContents(
        kind=model.kind, image_size=model.image_size, grid_size=model.grid_size, model=config_to_dict(model), **size,
        extra={"downsample": model.downsample, "normalization": "[-1, 1]",
               "perceptual": "lpips-vgg16" if perceptual else "off", **evaluation, "train": trained,
               "summary": summary},
    ).to_dict()
