"""The tokenizers' training losses: pixel, LPIPS perceptual, adversarial, and the GAN weighting (taming's vqperceptual).

    perceptual = build_perceptual(vgg_path)       # None without a path: the perceptual term is off (vltk's choice)
    rec = pixel_loss(x, out.recon, "l1") + (perceptual(x, out.recon).mean() if perceptual else 0)
    g = generator_loss("hinge", disc(out.recon))
    weight = adaptive_weight(rec, g, model.last_layer) * disc_weight * gan_factor(step, start, ramp_steps)
    d = discriminator_loss("hinge", disc(x), disc(out.recon.detach()))

LPIPS uses the `lpips` package's calibrated linear heads (shipped in its wheel) on a VGG16 backbone whose weights the
user gives as a torchvision-format state dict (`features.0.weight`, ...): torchvision's `vgg16-397923af.pth`, the one
the heads were calibrated on, checked against the SHA-256 prefix in its name (`vltk.weights`). There is never a silently
random backbone: without a path there is no perceptual loss, and a test that wants a random VGG saves one to a file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vltk.errors import VltkError
from vltk.weights import LPIPS_LAYERS, VGG16, verify

GanLoss = Literal["hinge", "vanilla"]
# torchvision's vgg16().features indices of the convs LPIPS uses, by lpips' slice (relu1_2 ... relu5_3).
VGG_SLICES = {1: (0, 2), 2: (5, 7), 3: (10, 12, 14), 4: (17, 19, 21), 5: (24, 26, 28)}


def pixel_loss(x: torch.Tensor, recon: torch.Tensor, kind: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Mean absolute (l1) or squared (l2) error over all pixels."""
    return F.l1_loss(recon, x) if kind == "l1" else F.mse_loss(recon, x)


def vgg_to_lpips_keys() -> dict[str, str]:
    """torchvision VGG16 state-dict key -> the key of the same tensor in `lpips.LPIPS(net="vgg")`."""
    return {f"features.{i}.{p}": f"net.slice{s}.{i}.{p}"
            for s, indices in VGG_SLICES.items() for i in indices for p in ("weight", "bias")}


class Perceptual(nn.Module):
    """LPIPS-VGG16 between images in [-1, 1]; frozen and always in eval mode. forward -> (B,) distances."""

    def __init__(self, vgg_path: Path) -> None:
        super().__init__()
        import lpips  # heavy (imports torchvision models); only runs that use the perceptual loss pay for it

        state = _load_vgg(Path(vgg_path))
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` flag
            warnings.simplefilter("ignore")
            self.lpips = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        own = self.lpips.state_dict()
        for src, dst in vgg_to_lpips_keys().items():
            if state[src].shape != own[dst].shape:
                raise VltkError(f"{vgg_path}: '{src}' has shape {tuple(state[src].shape)}, VGG16 has "
                                f"{tuple(own[dst].shape)}; is this a torchvision vgg16 state dict? ({VGG16.hint})")
            own[dst] = state[src]
        self.lpips.load_state_dict(own)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Perceptual:
        return super().train(False)  # the heads carry dropout; the loss must stay deterministic

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y).flatten()


def _load_vgg(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():  # the linear layers come with lpips: named too, as users look for both
        raise VltkError(f"VGG16 weights not found: {path} ({VGG16.hint}; with {LPIPS_LAYERS.hint}), or leave the "
                        "perceptual loss off")
    verify(path, VGG16)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one that needs pickle code to load
        detail = " ".join(str(err).split())[:300]  # torch's weights_only refusal spans many lines
        raise VltkError(f"cannot read VGG16 weights {path}: {detail} ({VGG16.hint})") from None
    missing = [k for k in vgg_to_lpips_keys() if not isinstance(state, dict) or k not in state]
    if missing:
        raise VltkError(f"{path} is not a torchvision VGG16 state dict: missing {', '.join(missing[:4])}"
                        f"{' ...' if len(missing) > 4 else ''} ({VGG16.hint})")
    return state


def build_perceptual(vgg_path: Path | str | None) -> Perceptual | None:
    """LPIPS from the user's VGG16 weights, or None (no perceptual loss) when no path is given."""
    return None if vgg_path is None else Perceptual(Path(vgg_path))


def discriminator_loss(kind: GanLoss, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """hinge: 1/2 (E relu(1 - D(x)) + E relu(1 + D(x̂))); vanilla: 1/2 (E softplus(-D(x)) + E softplus(D(x̂)))."""
    if kind == "hinge":
        return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def generator_loss(kind: GanLoss, logits_fake: torch.Tensor) -> torch.Tensor:
    """hinge: -E D(x̂) (taming); vanilla: the non-saturating E softplus(-D(x̂)) = -E log sigmoid(D(x̂))."""
    return -logits_fake.mean() if kind == "hinge" else F.softplus(-logits_fake).mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    clamp: float = 1e4) -> torch.Tensor:
    """||d rec / d last_layer|| / (||d g / d last_layer|| + 1e-4), clamped to [0, clamp] and detached (taming)."""
    rec_grad, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, clamp).detach()


def gan_factor(step: int, start: int, ramp_steps: int) -> float:
    """The generator's GAN-weight factor: 0 before `start`, then linear from 0 to 1 over `ramp_steps` steps.

    The discriminator trains from `start` on, so during the ramp it warms up against a generator that barely feels it;
    switching the adversarial term on at full weight degrades reconstructions (CompVis/taming-transformers#44).
    """
    if step < start:
        return 0.0
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - start) / ramp_steps)
