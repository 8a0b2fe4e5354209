"""Draws from GIVT's Gaussian mixtures (`vltk.models.gmm`): a component from the mixture weights, then its Gaussian.

    z, log_density = sample(gmm, generator)                     # (..., d), (...,)
    one = component(gmm, index)                                 # the chosen component only (DB-CFG)
"""

from __future__ import annotations

import torch

from vltk.models.gmm import GMM, log_density
from vltk.sampling.common import sample as draw_categorical


def sample_component(gmm: GMM, generator: torch.Generator | None = None) -> torch.Tensor:
    """The mixture index of each token drawn from pi: (...,) long, or (..., d) per channel."""
    return draw_categorical(gmm.logits, generator)[0]


def component(gmm: GMM, index: torch.Tensor) -> GMM:
    """The one-component GMM of the chosen components `index` (as `sample_component` returns)."""
    def take(x: torch.Tensor, event: int) -> torch.Tensor:  # x (..., k, *event shape) -> (..., 1, *event shape)
        at = index.view(*index.shape, 1, *[1] * event).expand(*index.shape, 1, *x.shape[x.dim() - event:])
        return x.gather(index.dim(), at)

    event = 2 if gmm.kind == "full" else 1
    return GMM(gmm.kind, torch.zeros_like(take(gmm.logits, 0)), take(gmm.means, 1), take(gmm.scales, event))


def sample(gmm: GMM, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per token: a component from pi, then its Gaussian. Returns (z (..., d), log p(z) (...,)) in float32,
    the density being the whole mixture's (MaskGIT decoding orders by it)."""
    chosen = component(gmm, sample_component(gmm, generator))
    noise = torch.randn(chosen.means.shape, generator=generator, device=chosen.means.device)
    if gmm.kind == "full":
        z = chosen.means + (chosen.scales @ noise.unsqueeze(-1)).squeeze(-1)
    else:
        z = chosen.means + chosen.scales * noise
    z = z[..., 0, 0] if gmm.kind == "per_channel" else z[..., 0, :]  # drop the one-component (and event) axes
    return z, log_density(gmm, z)
