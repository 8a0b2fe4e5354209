"""The released weights vltk reads from files the user gives: what each file is, where users get it, how it is checked.

    require(path, INCEPTION, "Inception weights")   # missing, or not the release: a VltkError naming it and its URL
    raise VltkError(f"{path} does not fit ... ({INCEPTION.hint})")   # the end of any other error about the file

vltk downloads nothing (it runs where nothing can be reached), so every error about a weights file names the file as
released and where it is published. Where the release's SHA-256 is published, the file given is hashed and compared,
whatever its name: in full, or only the prefix that a torch.hub-style file name carries (`vgg16-397923af.pth`: the first
8 hex digits, which torch.hub's `check_hash` compares; the rest is published nowhere). A renamed file is the same bytes
and is checked; a `.safetensors` conversion of a torch release hashes differently and cannot be: that is said on the
console, never skipped in silence.

Tests load random-init weights shaped like the releases, which no published hash matches. They set the environment
variable VLTK_SKIP_WEIGHT_HASH=1 (tests/conftest.py, so that the stages' subprocesses inherit it); it is meant for tests
only, and each check it skips says so on the console. An environment variable rather than a parameter: the weights are
loaded deep inside the stages (score, sample, tokenize image), and a flag through all of them would put a "skip the
check" switch in front of every user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from vltk.errors import VltkError
from vltk.ui import console

SKIP_HASH = "VLTK_SKIP_WEIGHT_HASH"


@dataclasses.dataclass(frozen=True)
class Release:
    what: str  # what the weights are, as errors name them
    name: str  # the file as released
    source: str  # where users get it
    sha256: str | None  # the full hex digest, the prefix published in `name`, or None (then not checked)

    @property
    def hint(self) -> str:
        """What the file is and where users get it, for the end of an error about a weights file."""
        return f"{self.what}: {self.name} from {self.source}"


# Named by torch.hub's convention (name-<sha256 prefix>.pth), though torch-fidelity downloads it without check_hash.
INCEPTION = Release(
    "torch-fidelity's FID Inception-v3", "weights-inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    "6726825d",
)
VGG16 = Release(  # torchvision's IMAGENET1K_V1: the backbone that LPIPS's linear layers were calibrated on
    "torchvision's VGG16 (LPIPS's backbone)", "vgg16-397923af.pth",
    "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af",
)
LPIPS_LAYERS = Release(  # shipped inside the lpips wheel: users install the package, they never give this file
    "LPIPS's VGG linear layers", "lpips/weights/v0.1/vgg.pth",
    "the lpips package (pip install lpips; https://github.com/richzhang/PerceptualSimilarity)", None,
)
# Any open_clip state dict of the chosen architecture is valid (LAION's too), so no one file's hash can be required.
CLIP_VIT_B32 = Release(
    "MAGVLT's CLIP, OpenAI's ViT-B/32 with arch ViT-B-32-quickgelu", "open_clip_model.safetensors",
    "https://huggingface.co/timm/vit_base_patch32_clip_224.openai (hub name timm/vit_base_patch32_clip_224.openai; "
    "open_clip's ViT-B-32 pretrained='openai')", None,
)
# Any taming VQ-GAN checkpoint loads (f16-1024, ...), and the release publishes no hash.
TAMING_F16_16384 = Release(
    "MAGVLT's tokenizer, taming's VQ-GAN vqgan_imagenet_f16_16384", "ckpts/last.ckpt",
    "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/ (the taming-transformers README)", None,
)


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at `path` (hashlib reads it in chunks: a 500 MB VGG16 never sits in memory whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def require(path: Path, release: Release, what: str) -> None:
    """A VltkError ("`what` not found", with `release.hint`) when `path` is not a file; then `verify`."""
    if not Path(path).is_file():
        raise VltkError(f"{what} not found: {path} ({release.hint})")
    verify(Path(path), release)


def verify(path: Path, release: Release) -> None:
    """A one-line VltkError when the file's SHA-256 is not the one published for `release` (see the module doc)."""
    if release.sha256 is None:
        return
    if path.suffix == ".safetensors" and not release.name.endswith(".safetensors"):
        console().print(f"[yellow]{path} is not checked against {release.name}'s sha256: a .safetensors conversion "
                        "hashes differently[/]")
        return
    if os.environ.get(SKIP_HASH) == "1":
        console().print(f"[yellow]{path} is not checked against {release.name}'s sha256 ({SKIP_HASH}=1, for tests)[/]")
        return
    digest = sha256_file(path)
    if not digest.startswith(release.sha256):
        published = "" if len(release.sha256) == 64 else "... (only this prefix is published, in the file name)"
        raise VltkError(f"{path} is not {release.name} (sha256 {digest}, expected {release.sha256}{published}); "
                        f"get it from {release.source}")
