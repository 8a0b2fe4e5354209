"""GIVT's output distribution: a Gaussian mixture per soft token, read from the head's raw outputs (GIVT §3.2).

    cfg = GMMConfig(kind="diagonal", mixtures=16, channels=16)
    gmm = GMM.from_logits(raw, cfg, scale_temperature=0.95)   # raw (..., cfg.num_logits) from the GIVT head
    loss = nll(gmm, z).mean()                                   # z (..., 16); per token, float32

Three kinds, each with the raw-output layout of big_vision's `get_pdf` (k = mixtures, d = channels):
    diagonal     k + 2kd: [k mixture logits | per component j: d means, then d raw scales]. A mixture of d-variate
                 Gaussians with diagonal covariance (the released ImageNet models).
    per_channel  3kd as [mixture logits | means | raw scales], each (d, k): an independent 1-D mixture per channel.
    full         k = 1, d^2 + d: [d^2 raw scale entries, row-major | d means]. Only the lower triangle of the d x d
                 block is used, as a Cholesky factor of the covariance. Its diagonal goes through the scale function
                 and the floor, so it is positive; the entries below it stay raw (the official code squares-plus them
                 too, which allows positive correlations only; we do not).
Scales: squareplus (x + sqrt(x^2 + 4)) / 2 (the code's, for checkpoint parity) or softplus (the paper's), then
max(scale, 1e-6). At zero raw outputs every kind is N(0, I): equal weights, means 0, squareplus(0) = 1.

Shapes inside a GMM (batch shape ...): diagonal logits (..., k), means / scales (..., k, d); per_channel logits
(..., d, k), means / scales (..., d, k, 1) (d one-channel mixtures); full logits (..., 1), means (..., 1, d),
scales (..., 1, d, d) lower-triangular. All densities and draws are float32 whatever the model's dtype.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F

from vltk.config import require_range

Kind = Literal["diagonal", "per_channel", "full"]
KINDS: tuple[str, ...] = ("diagonal", "per_channel", "full")
LOG_2PI = math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GMMConfig:
    kind: Kind = "diagonal"
    mixtures: int = 16  # k (the full kind has exactly one)
    channels: int = 16  # d, the latent's channels
    scale: Literal["squareplus", "softplus"] = "squareplus"
    scale_floor: float = 1e-6

    def __post_init__(self) -> None:
        require_range(self, "mixtures", "channels")
        if self.kind not in KINDS:
            raise ValueError(f"unknown GMM kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.kind == "full" and self.mixtures != 1:
            raise ValueError(f"the full-covariance GMM has one component, got mixtures={self.mixtures}")
        if self.scale not in ("squareplus", "softplus"):
            raise ValueError(f"unknown scale function {self.scale!r}; choose squareplus or softplus")
        if not self.scale_floor > 0:
            raise ValueError(f"scale_floor must be > 0, got {self.scale_floor}")

    @property
    def num_logits(self) -> int:
        k, d = self.mixtures, self.channels
        return {"diagonal": k + 2 * k * d, "per_channel": 3 * k * d, "full": d * d + d}[self.kind]


def squareplus(x: torch.Tensor) -> torch.Tensor:
    return (x + torch.sqrt(x * x + 4)) / 2


@dataclasses.dataclass(frozen=True)
class GMM:
    kind: Kind
    logits: torch.Tensor  # mixture logits, already multiplied by the mixture temperature
    means: torch.Tensor
    scales: torch.Tensor  # standard deviations (diagonal, per_channel) or the lower-triangular factor (full)

    @staticmethod
    def from_logits(raw: torch.Tensor, cfg: GMMConfig, scale_temperature: float = 1.0,
                    mixture_temperature: float = 1.0) -> GMM:
        """The mixture of (..., num_logits) raw head outputs. scale_temperature t multiplies the standard deviations
        (the covariance by t^2, GIVT §3.4's variance scaling); mixture_temperature multiplies the mixture logits."""
        if raw.shape[-1] != cfg.num_logits:
            raise ValueError(f"expected {cfg.num_logits} raw outputs per token for {cfg}, got {raw.shape[-1]}")
        raw = raw.float()
        k, d, batch = cfg.mixtures, cfg.channels, raw.shape[:-1]
        scale_fn = squareplus if cfg.scale == "squareplus" else F.softplus
        if cfg.kind == "diagonal":
            logits = raw[..., :k]
            rest = raw[..., k:].reshape(*batch, k, 2, d)
            means, scales = rest[..., 0, :], scale_fn(rest[..., 1, :]).clamp(min=cfg.scale_floor)
        elif cfg.kind == "per_channel":
            logits, means, scales = raw.reshape(*batch, 3, d, k).unbind(-3)  # 3 x (..., d, k)
            means, scales = means.unsqueeze(-1), scale_fn(scales).clamp(min=cfg.scale_floor).unsqueeze(-1)
        else:
            block = raw[..., :d * d].reshape(*batch, d, d)
            diagonal = scale_fn(block.diagonal(dim1=-2, dim2=-1)).clamp(min=cfg.scale_floor)  # (..., d)
            scales = (block.tril(-1) + torch.diag_embed(diagonal)).unsqueeze(-3)  # (..., 1, d, d)
            means = raw[..., d * d:].unsqueeze(-2)  # (..., 1, d)
            logits = raw.new_zeros(*batch, 1)
        return GMM(cfg.kind, logits * mixture_temperature, means, scales * scale_temperature)


def normal_log_prob(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, scale^2), elementwise (broadcasting)."""
    return -0.5 * ((x - mean) / scale).square() - scale.log() - 0.5 * LOG_2PI


def component_log_density(gmm: GMM, z: torch.Tensor) -> torch.Tensor:
    """log N(z; mu_j, Sigma_j) of every component j: (..., k), or (..., d, k) per channel. z (..., d)."""
    z = z.float()
    if gmm.kind == "per_channel":
        z = z.unsqueeze(-1)  # (..., d, 1): channel c against its own mixture
    z = z.unsqueeze(-2)  # (..., 1, d) or (..., d, 1, 1) against (..., k, d) or (..., d, k, 1)
    if gmm.kind == "full":
        # With Sigma = S S^T: log N = -1/2 |S^-1 (z - mu)|^2 - sum log diag(S) - d/2 log 2 pi.
        white = torch.linalg.solve_triangular(gmm.scales, (z - gmm.means).unsqueeze(-1), upper=False).squeeze(-1)
        log_det = gmm.scales.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * white.square().sum(-1) - log_det - 0.5 * z.shape[-1] * LOG_2PI
    return normal_log_prob(z, gmm.means, gmm.scales).sum(-1)


def log_density(gmm: GMM, z: torch.Tensor) -> torch.Tensor:
    """(...,) log p(z) = log sum_j pi_j N(z; mu_j, Sigma_j), by logsumexp in float32 (summed over channels per
    channel). Continuous: it may be positive."""
    joint = gmm.logits.log_softmax(-1) + component_log_density(gmm, z)
    per_mixture = joint.logsumexp(-1)
    return per_mixture.sum(-1) if gmm.kind == "per_channel" else per_mixture


def nll(gmm: GMM, z: torch.Tensor) -> torch.Tensor:
    """(...,) negative log-likelihood of each token z (..., d) (GIVT App. C.1, eq. 2)."""
    return -log_density(gmm, z)
