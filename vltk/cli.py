"""The `vltk` command line: one subcommand per pipeline stage, each joined to the next by an artifact on disk.

    vltk synth shapes build/demo/raw --count 2000
    vltk shard build/demo/raw build/demo/shards --size 32
    vltk tokenize text build/demo/shards build/demo/text-tok --vocab-size 512
    vltk info build/demo/shards

Each command only parses flags, loads the stage's config (defaults <- --config TOML <- flags <- --set), calls
`vltk.pipeline.<stage>.run` and prints the artifact it made.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, NoReturn, Optional

import typer
from rich.markup import escape

from vltk import __version__
from vltk.artifacts import abandon_open_jobs
from vltk.errors import VltkError
from vltk.ui import console

app = typer.Typer(
    help="vltk: masked generative vision-language transformers (MAGVLT, ARGVLT, GIVT), end to end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Make a built-in data set.", no_args_is_help=True)
tokenize_app = typer.Typer(help="Train or load a tokenizer.", no_args_is_help=True)
import_app = typer.Typer(help="Turn a released checkpoint into a vltk artifact.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(tokenize_app, name="tokenize")
app.add_typer(import_app, name="import")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Stage config (TOML).", dir_okay=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set key=value (repeat).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild the output even if it is up to date.")]


def cli_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """User errors and what the system refuses (a read-only folder, a full disk) become one red line and exit code 2;
    Ctrl-C exits 130 without a traceback. Whatever ends a command early, the output it began is removed, except the
    `.partial/` of a long stage that a re-run continues."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
            _end_process_group()
        except VltkError as err:
            _fail(str(err))
        except OSError as err:
            _fail(_os_error(err))
        except KeyboardInterrupt:
            abandon_open_jobs()
            console().print("[yellow]interrupted[/]: nothing was published")
            raise typer.Exit(130) from None
        except BaseException:
            abandon_open_jobs()
            raise

    return wrapper


def _end_process_group() -> None:
    """Tear down the process group of a finished command under `accelerate launch` (every process gets here after the
    stage's last barrier). Left to the interpreter's exit, gloo's threads can abort a process whose work is done and
    published (SIGABRT, "terminate called without an active exception"), and the launcher then reports a failure."""
    distributed = sys.modules.get("torch.distributed")  # never imported by a command that did not use torch
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def _fail(message: str) -> NoReturn:
    abandon_open_jobs()
    console().print(f"[bold red]error:[/] {escape(message)}")  # a message's own brackets are text, not rich markup
    raise typer.Exit(2) from None


def _os_error(err: OSError) -> str:
    """'<file>: <what the system said>' (e.g. 'build/x.partial/model.safetensors: No space left on device')."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    what = err.strerror or str(err)
    return f"{where}: {what}" if where else what


def done(out: Path) -> None:
    """The closing line of a stage: what it made and where (once, from the main process of a distributed launch)."""
    from vltk.artifacts import read_manifest

    if os.environ.get("RANK", "0") != "0":
        return

    manifest = read_manifest(out)
    summary = manifest.get("contents", {}).get("summary", "")
    console().print(f"[bold green]✓[/] {manifest['stage']}: {summary} -> [bold]{out}[/]")


def version_callback(value: bool) -> None:
    if value:
        print(f"vltk {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True)] = False,
) -> None:
    """vltk: masked generative vision-language transformers (MAGVLT, ARGVLT, GIVT), end to end."""


@synth_app.command("shapes")
@cli_errors
def synth_shapes(
    out: Annotated[Path, typer.Argument(help="Output folder (images + captions.jsonl).")],
    count: Annotated[Optional[int], typer.Option(help="Number of images.")] = None,
    size: Annotated[Optional[int], typer.Option(help="Image side in pixels.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (the data set is a function of it).")] = None,
    objects: Annotated[Optional[int], typer.Option(help="Most objects per image (1-3).")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Fraction of images in the val split.")] = None,
    heldout: Annotated[Optional[list[str]], typer.Option(
        help="A 'colour shape' pair kept out of train (repeat for several; replaces the default set).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """The built-in data set: procedural scenes of coloured shapes with paraphrased captions."""
    from vltk.config import load_config
    from vltk.pipeline import synth

    flags = {"count": count, "size": size, "seed": seed, "max_objects": objects, "val_fraction": val_fraction,
             "heldout": heldout}
    cfg = load_config(synth.SynthConfig, config, set_ or (), flags)
    done(synth.run(cfg, out, force=force))


def _parse_part(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VltkError(f"--part must look like i/n (e.g. 0/8), got {text!r}") from None
    if not 0 <= i < n:
        raise VltkError(f"--part {text}: need 0 <= i < n")
    return i, n


@app.command("shard")
@cli_errors
def shard(
    src: Annotated[Path, typer.Argument(help="A folder, COCO captions or panoptic JSON, TSV/CSV, JSONL, WebDataset "
                                             "tar(s) or synth folder.")],
    out: Annotated[Path, typer.Argument(help="Output shards artifact.")],
    format: Annotated[Optional[str], typer.Option(
        "--format", help="folder|coco|coco-panoptic|tsv|jsonl|wds (auto-detected).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Output image side in pixels.")] = None,
    resize: Annotated[Optional[str], typer.Option(help="center-crop | pad.")] = None,
    image_format: Annotated[Optional[str], typer.Option(help="png | jpeg.")] = None,
    quality: Annotated[Optional[int], typer.Option(help="JPEG quality.")] = None,
    shard_size: Annotated[Optional[int], typer.Option(help="Samples per tar shard.")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Val split fraction when the source has none.")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Image folder of a COCO JSON / TSV / JSONL source.")] = None,
    image_column: Annotated[Optional[str], typer.Option(help="TSV/JSONL column holding the image path.")] = None,
    caption_column: Annotated[Optional[str], typer.Option(help="TSV/JSONL column holding the caption(s).")] = None,
    depth: Annotated[Optional[Path], typer.Option(help="Folder of depth maps named as the images (stem + .png 16-bit "
                                                       "mm or .npy metres), e.g. NYU Depth v2.")] = None,
    workers: Annotated[int, typer.Option(help="Decoding processes.")] = 2,
    part: Annotated[Optional[str], typer.Option(help="i/n: shard only slice i of n (one per machine).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Ingest image-caption data into WebDataset shards (resized, validated, split into train/val)."""
    from vltk.config import load_config
    from vltk.pipeline import shard as stage

    flags = {
        "format": format, "size": size, "resize": resize, "image_format": image_format, "quality": quality,
        "shard_size": shard_size, "val_fraction": val_fraction,
        "images": str(images) if images else None, "image_column": image_column, "caption_column": caption_column,
        "depth": str(depth) if depth else None,
    }
    cfg = load_config(stage.ShardConfig, config, set_ or (), flags)
    done(stage.run(cfg, src, out, workers=workers, part=_parse_part(part), force=force))


@tokenize_app.command("text")
@cli_errors
def tokenize_text(
    source: Annotated[str, typer.Argument(help="A shards artifact (train BPE on its captions), a CLIP "
                                               "bpe_simple_vocab_16e6.txt.gz, or 'clip' (open_clip's copy).")],
    out: Annotated[Path, typer.Argument(help="Output text-tokenizer artifact.")],
    vocab_size: Annotated[Optional[int], typer.Option(help="Target vocabulary size when training.")] = None,
    context_length: Annotated[Optional[int], typer.Option(help="Token context (EOS-padded).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Text tokenizer: byte-level BPE trained on the shards' captions, or CLIP's vocabulary."""
    from vltk.config import load_config
    from vltk.pipeline import tokenize_text as stage

    cfg = load_config(stage.TextTokenizerConfig, config, set_ or (),
                      {"vocab_size": vocab_size, "context_length": context_length})
    done(stage.run(cfg, source, out, force=force))


@tokenize_app.command("image")
@cli_errors
def tokenize_image(
    shards: Annotated[Path, typer.Argument(help="Shards artifact (vltk shard).")],
    out: Annotated[Path, typer.Argument(help="Output image-tokenizer artifact.")],
    kind: Annotated[Optional[str], typer.Option(help="vqgan | vae.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps.")] = None,
    from_taming: Annotated[Optional[Path], typer.Option(
        "--from-taming", help="Import this released taming VQ-GAN checkpoint (last.ckpt) instead of training.",
        dir_okay=False)] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even when there is a GPU.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Image tokenizer: train a VQ-GAN (discrete codes) or a beta-VAE (continuous latents) on the shards' images, or
    import a released taming VQ-GAN (evaluated on the shards' val split)."""
    from vltk.config import load_config
    from vltk.pipeline import tokenize_image as stage

    if from_taming is not None and (kind is not None or steps is not None):
        raise VltkError("--from-taming imports a trained VQ-GAN: --kind and --steps do not apply")
    cfg = load_config(stage.TokenizeImageConfig, config, set_ or (), {"model.kind": kind, "train.steps": steps})
    done(stage.run(cfg, shards, out, from_taming=from_taming, force=force, cpu=cpu))


@tokenize_app.command("label")
@cli_errors
def tokenize_label(
    shards: Annotated[Path, typer.Argument(help="Shards artifact (vltk shard) with panoptic or depth labels.")],
    out: Annotated[Path, typer.Argument(help="Output label-tokenizer artifact.")],
    task: Annotated[Optional[str], typer.Option(help="panoptic | depth.")] = None,
    bottleneck: Annotated[Optional[str], typer.Option(help="vae (GIVT) | vq (UViM).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even when there is a GPU.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Label tokenizer (UViM stage I): train an autoencoder of panoptic or depth label maps with a Gaussian (GIVT) or
    VQ (UViM) bottleneck, scored on the val split against a trivial baseline."""
    from vltk.config import load_config
    from vltk.pipeline import tokenize_label as stage

    cfg = load_config(stage.TokenizeLabelConfig, config, set_ or (),
                      {"model.task": task, "model.bottleneck": bottleneck, "train.steps": steps})
    done(stage.run(cfg, shards, out, force=force, cpu=cpu))


@app.command("encode")
@cli_errors
def encode(
    shards: Annotated[Path, typer.Argument(help="Shards artifact (vltk shard).")],
    image_tok: Annotated[Path, typer.Argument(help="Image tokenizer artifact (vltk tokenize image).")],
    text_tok: Annotated[Path, typer.Argument(help="Text tokenizer artifact (vltk tokenize text).")],
    out: Annotated[Path, typer.Argument(help="Output encoded artifact.")],
    batch_size: Annotated[Optional[int], typer.Option(help="Images per tokenizer call (also MixSel's window).")] = None,
    mixsel_pairs: Annotated[Optional[int], typer.Option(help="MixSel partners per image (0 = none).")] = None,
    mixed_precision: Annotated[Optional[str], typer.Option(
        help="no | bf16 | auto (bf16 on a GPU): bf16 autocast for the tokenizer.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Encode on the CPU even when there is a GPU.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Encode every image (token grids or latents) and every caption (text ids) once, plus MixSel's mixed pairs."""
    from vltk.config import load_config
    from vltk.pipeline import encode as stage

    flags = {"batch_size": batch_size, "mixsel_pairs": mixsel_pairs, "mixed_precision": mixed_precision}
    cfg = load_config(stage.EncodeConfig, config, set_ or (), flags)
    done(stage.run(cfg, shards, image_tok, text_tok, out, force=force, cpu=cpu))


@app.command("train-gen")
@cli_errors
def train_gen(
    encoded: Annotated[Path, typer.Argument(help="Encoded artifact (vltk encode); for givt-uvim a label tokenizer "
                                                 "(vltk tokenize label).")],
    out: Annotated[Path, typer.Argument(help="Output generator artifact.")],
    model: Annotated[Optional[str], typer.Option(
        "--model", help="magvlt | argvlt | givt-causal | givt-maskgit | givt-uvim (UViM stage II: GIVT on a vae "
        "label tokenizer, UViM's VQ baseline on a vq one; default: the config's `generator`, else magvlt).")] = None,
    size: Annotated[Optional[str], typer.Option(help="Model size preset: tiny | small | base | large.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Global batch (all processes and micro-batches).")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even when there is a GPU.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Generator: train MAGVLT (masked, bidirectional) or ARGVLT (causal) on encoded image tokens and captions."""
    from vltk.pipeline import train_gen as stage

    flags = {"model.size": size, "train.steps": steps, "train.batch_size": batch_size}
    done(stage.run(stage.load_train_config(model, config, set_ or (), flags), encoded, out, force=force, cpu=cpu))


@import_app.command("magvlt")
@cli_errors
def import_magvlt(
    checkpoint: Annotated[Path, typer.Argument(help="A released MAGVLT checkpoint (magvlt-it2it-base.ckpt, "
                                                    "magvlt-it2it-large.ckpt) or its state dict.", dir_okay=False)],
    encoded: Annotated[Path, typer.Argument(help="Encoded artifact (vltk encode) made with taming's VQ-GAN (tokenize "
                                                 "image --from-taming) and CLIP's BPE (tokenize text clip).")],
    out: Annotated[Path, typer.Argument(help="Output generator artifact (for vltk sample).")],
    force: ForceOpt = False,
) -> None:
    """A released MAGVLT (kakaobrain/magvlt) as a generator artifact over encoded data, to sample and score."""
    from vltk.pipeline import import_magvlt as stage

    done(stage.run(checkpoint, encoded, out, force=force))


@app.command("sample")
@cli_errors
def sample(
    gen: Annotated[Path, typer.Argument(help="Generator artifact (vltk train-gen or vltk import magvlt).")],
    out: Annotated[Path, typer.Argument(help="Output samples artifact.")],
    task: Annotated[Optional[str], typer.Option(
        help="t2i | i2t | it2it | inpaint | infill | joint | class (GIVT) | dense (UViM: label maps of "
        "the shards' images).")] = None,
    prompt: Annotated[Optional[list[str]], typer.Option(
        "--prompt", help="A t2i prompt, a class id / name for --task class, or for --task joint a caption with the "
        "words to regenerate in [brackets] (repeat); default: the split's records.")] = None,
    count: Annotated[Optional[int], typer.Option(help="Records of the split (or it2it pairs) to sample for.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split of the generator's encoded data.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the first batch (batch k: seed + its first index).")] = None,
    candidates: Annotated[Optional[int], typer.Option(
        help="Samples drawn per prompt or image; the best by --rerank is kept (paper: 32 / 64).")] = None,
    rerank: Annotated[Optional[str], typer.Option(
        help="self: the generator's own score (MAGVLT / ARGVLT: log p(caption | image); GIVT: the condition's "
        "pointwise mutual information with the image) | clip: CLIP similarity (needs --clip).")] = None,
    clip: Annotated[Optional[Path], typer.Option(
        "--clip", help="open_clip weights for --rerank clip (arch: --set clip_arch=...).", dir_okay=False)] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Sample on the CPU even when there is a GPU.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Generate: images from captions or classes, captions from images, pairs, inpainting, infilling or both at once,
    with the papers' samplers."""
    from vltk.config import load_config
    from vltk.pipeline import sample as stage

    flags = {"task": task, "prompts": prompt or None, "count": count, "split": split, "seed": seed,
             "candidates": candidates, "rerank": rerank, "clip_weights": str(clip) if clip is not None else None}
    cfg = load_config(stage.SampleConfig, config, set_ or (), flags)
    done(stage.run(cfg, gen, out, force=force, cpu=cpu))


@app.command("score")
@cli_errors
def score(
    samples: Annotated[Path, typer.Argument(help="Samples artifact (vltk sample).")],
    out: Annotated[Path, typer.Argument(help="Output scores artifact.")],
    meteor: Annotated[Optional[bool], typer.Option("--meteor/--no-meteor", help="METEOR (needs Java).")] = None,
    inception: Annotated[Optional[Path], typer.Option(
        "--inception", help="torch-fidelity's Inception-v3 weights (weights-inception-2015-12-05-6726825d.pth): "
        "FID and IS of generated images.", dir_okay=False)] = None,
    clip: Annotated[Optional[Path], typer.Option(
        "--clip", help="open_clip weights: CLIP score (arch: --set clip_arch=...).", dir_okay=False)] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Score on the CPU even when there is a GPU.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Metrics of samples: caption metrics (pycocoevalcap), the shapes judge's accuracies, FID / IS and CLIP score."""
    from vltk.config import load_config
    from vltk.pipeline import score as stage

    flags = {"meteor": meteor, "inception_weights": str(inception) if inception is not None else None,
             "clip_weights": str(clip) if clip is not None else None}
    cfg = load_config(stage.ScoreConfig, config, set_ or (), flags)
    done(stage.run(cfg, samples, out, force=force, cpu=cpu))


@app.command("plan")
@cli_errors
def plan(
    images: Annotated[Optional[int], typer.Option(help="Training images (default: COCO 2014 Karpathy train, 113,287).")
                      ] = None,
    stages: Annotated[Optional[Path], typer.Option(help="The stage configs make paper uses (default stages/paper).",
                                                   file_okay=False)] = None,
    gpu: Annotated[Optional[str], typer.Option(help="h100 | h200 | a100 (dense bf16 peak).")] = None,
    gpus: Annotated[Optional[int], typer.Option(help="GPUs the run is spread over.")] = None,
    mfu: Annotated[Optional[float], typer.Option(help="Model FLOPs utilisation to assume (0-1).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the plan as JSON here.",
                                                     dir_okay=False)] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Size a make paper run before launching it: steps, samples, tokens, FLOPs and GPU-hours per stage."""
    from vltk.config import load_config
    from vltk.pipeline import plan as stage

    flags = {"images": images, "stages": str(stages) if stages is not None else None, "gpu": gpu, "gpus": gpus,
             "mfu": mfu}
    stage.run(load_config(stage.PlanConfig, config, set_ or (), flags), json_out)


@app.command("compare")
@cli_errors
def compare(
    scores: Annotated[list[Path], typer.Argument(help="Scores artifacts (vltk score), then the output artifact.")],
    title: Annotated[Optional[str], typer.Option(help="The report's title.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Scores side by side in one report: a metrics table with a column per artifact, and the sample grids."""
    from vltk.config import load_config
    from vltk.pipeline import compare as stage

    if len(scores) < 2:
        raise VltkError("give one or more scores artifacts and then the output artifact")
    cfg = load_config(stage.CompareConfig, config, set_ or (), {"title": title})
    done(stage.run(cfg, scores[:-1], scores[-1], force=force))


@app.command("decode")
@cli_errors
def decode(
    source: Annotated[Path, typer.Argument(help="An encoded artifact, a .npy file or a folder of .npy files.")],
    out: Annotated[Path, typer.Argument(help="Output folder of PNGs + grid.png.")],
    image_tok: Annotated[Path, typer.Option("--image-tok", help="The image tokenizer artifact that decodes them.")],
    split: Annotated[Optional[str], typer.Option(help="Split of an encoded artifact (mixsel-train shows mixes).")] = None,
    count: Annotated[Optional[int], typer.Option(help="Decode at most this many.")] = None,
    latent: Annotated[Optional[str], typer.Option(help="VAE: mean | sample.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of --latent sample.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Token grids or latents back to PNGs and a grid."""
    from vltk.config import load_config
    from vltk.pipeline import decode as stage

    flags = {"split": split, "count": count, "latent": latent, "seed": seed}
    cfg = load_config(stage.DecodeConfig, config, set_ or (), flags)
    done(stage.run(cfg, source, image_tok, out, force=force))


@app.command("info")
@cli_errors
def info(
    path: Annotated[Path, typer.Argument(help="An artifact directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw manifest as JSON.")] = False,
) -> None:
    """Print an artifact's manifest: stage, inputs, contents and resolved config."""
    from vltk.pipeline import info as stage

    stage.run(path, as_json)
