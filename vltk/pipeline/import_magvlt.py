"""`vltk import magvlt`: a released MAGVLT checkpoint (kakaobrain/magvlt README: magvlt-it2it-base.ckpt,
magvlt-it2it-large.ckpt) as a generator artifact that `vltk sample` and `vltk score` use as one `vltk train-gen` made.

    vltk tokenize text clip build/paper/text-tok --config stages/paper/tokenize_text.toml
    vltk tokenize image build/paper/shards build/paper/image-tok --from-taming vqgan_imagenet_f16_16384/last.ckpt
    vltk encode build/paper/shards build/paper/image-tok build/paper/text-tok build/paper/encoded
    vltk import magvlt magvlt-it2it-base.ckpt build/paper/encoded build/paper/gen-released

As train-gen's, the artifact names an encoded artifact as its input `encoded`: sampling finds the tokenizers and the
records to caption and to draw prompts from there. That data must be encoded with the released model's tokenizers
(taming's vqgan_imagenet_f16_16384 and CLIP's BPE with a 64-token context, MAGVLT §4.1): the codebook, grid, text
vocabulary and context are checked against the weights, and when the checkpoint carries its VQ-GAN (`model_vqvae.*`)
its codebook against the image tokenizer's. The weights are mapped by `vltk.models.official` (`blind_prefix = false`:
the official attention mask) and written to `model.safetensors`; the manifest is train-gen's record, with
`imported` (the file) where train-gen puts its training numbers.

The file is read with `torch.load(weights_only=True)`, which runs no code from it. Lightning checkpoints that pickle
objects (hyper-parameters, a tokenizer) are refused with the line that re-saves their weights alone.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vltk.artifacts import begin, upstream
from vltk.config import config_to_dict
from vltk.errors import VltkError
from vltk.imagetok.artifact import WEIGHTS as IMAGE_WEIGHTS
from vltk.models.artifact import STAGE, WEIGHTS
from vltk.models.magvlt import MAGVLT, MAGVLTConfig
from vltk.models.official import PREFIX, official_config, official_shapes, to_vltk
from vltk.records import EncodedContents, GeneratorContents
from vltk.train.checkpoint import layout_mismatch

CODEBOOK = "model_vqvae.quantize.embedding.weight"  # the checkpoint's VQ-GAN codebook (magvlt stage1/vqgan.py)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of the checkpoint at `path`: a Lightning file's `state_dict`, or a bare state dict."""
    if not path.is_file():
        raise VltkError(f"MAGVLT checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
            raise VltkError(_pickled_objects(path)) from None  # e.g. Lightning's hyper-parameters (a tokenizer)
        raise VltkError(f"cannot read MAGVLT checkpoint {path}: {str(err).strip().splitlines()[0]}") from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or PREFIX + "tok_emb.weight" not in state:
        raise VltkError(f"{path} is not a MAGVLT checkpoint (no state_dict with {PREFIX}tok_emb.weight)")
    return state


def _pickled_objects(path: Path) -> str:
    """The one line for a checkpoint that pickles objects, with the command that re-saves its weights alone."""
    resave = (f"python -c \"import torch; ckpt = torch.load('{path}', map_location='cpu', weights_only=False); "
              f"torch.save(ckpt.get('state_dict', ckpt), '{path.with_suffix('.state.pt')}')\"")
    return (f"{path} holds pickled objects besides its weights, which vltk does not unpickle; on a machine you trust, "
            f"re-save its weights alone with: {resave} and import that file")


def run(checkpoint: Path, encoded: Path, out: Path, *, force: bool = False) -> Path:
    """The released MAGVLT at `checkpoint` as the generator artifact `out` over the encoded artifact `encoded`."""
    checkpoint, encoded, out = Path(checkpoint), Path(encoded), Path(out)
    contents = EncodedContents.read(encoded)
    if contents.kind != "vq":
        raise VltkError(f"{encoded} holds continuous latents; MAGVLT reads VQ codes (encode with taming's VQ-GAN)")
    state = read_checkpoint(checkpoint)
    cfg = official_config(state, image_vocab=contents.codebook_size)
    transformer = {k: tuple(v.shape) for k, v in state.items() if k.startswith(PREFIX)}  # model_vqvae.* aside
    if problem := layout_mismatch(transformer, official_shapes(cfg)):
        raise VltkError(f"{checkpoint} is not in the released MAGVLT layout ({problem})")
    _check_data(cfg, contents, encoded, state.get(CODEBOOK), checkpoint)
    job = begin(out, stage=STAGE, config=cfg, inputs={"encoded": encoded, "checkpoint": checkpoint}, force=force)
    if job is None:
        return out
    weights = to_vltk(state, cfg)
    with torch.device("meta"):  # shapes only: the map must fill vltk's model exactly
        MAGVLT(cfg).load_state_dict(weights, strict=True, assign=True)
    save_file(weights, job.work / WEIGHTS)
    params = sum(v.numel() for v in weights.values())
    summary = f"magvlt {cfg.size} ({params / 1e6:.2f}M parameters), imported from {checkpoint.name}"
    return job.publish(GeneratorContents(
        generator="magvlt", model=config_to_dict(cfg), image_vocab=cfg.image_vocab, text_vocab=cfg.text_vocab,
        image_tokens=cfg.image_tokens, text_tokens=cfg.text_tokens, grid_size=contents.grid_size,
        image_size=contents.image_size,
        ids={"eos_id": contents.eos_id, "pad_id": contents.pad_id, "sep_id": contents.sep_id,
             "sot_id": contents.sot_id},
        extra={"parameters": params, "imported": {"from": "kakaobrain/magvlt", "checkpoint": str(checkpoint)},
               "summary": summary},
    ).to_dict())


def _check_data(cfg: MAGVLTConfig, contents: EncodedContents, encoded: Path, codebook: torch.Tensor | None,
                checkpoint: Path) -> None:
    """One line when the encoded data was not made with the tokenizers the weights were trained on."""
    sizes = {"text vocabulary": (cfg.text_vocab, contents.text_vocab_size),
             "image tokens": (cfg.image_tokens, contents.grid_size ** 2),
             "text context": (cfg.text_tokens, contents.context_length)}
    if wrong := [f"{name} {ours} in the weights, {theirs} in the data" for name, (ours, theirs) in sizes.items()
                 if ours != theirs]:
        raise VltkError(f"{checkpoint} does not fit {encoded} ({'; '.join(wrong)}): encode with taming's "
                        "vqgan_imagenet_f16_16384 (vltk tokenize image --from-taming) and CLIP's BPE (vltk tokenize "
                        "text clip) at the model's context")
    if codebook is None:
        return
    image_tok = upstream(encoded, "image_tok")
    with safe_open(str(image_tok / IMAGE_WEIGHTS), framework="pt") as weights:
        ours = weights.get_tensor("quantizer.codebook")  # (codebook_size, code_dim)
    if ours.shape != codebook.shape or not torch.allclose(ours, codebook.float(), atol=1e-4):
        raise VltkError(f"{checkpoint} was trained on another VQ-GAN than {image_tok} ({CODEBOOK} differs from its "
                        "codebook): import taming's vqgan_imagenet_f16_16384 with vltk tokenize image --from-taming")
