"""FID and Inception Score with torch-fidelity's Inception-v3: the TF-ported FID network, from a local weights file.

    net = load_inception(Path("weights-inception-2015-12-05-6726825d.pth"), "cuda")
    fake = inception_features(net, generated)          # generated: uint8 (H, W, 3) arrays; fake.pool: (N, 2048)
    real = inception_features(net, real_images)
    fid(fake.pool, real.pool), inception_score(fake.logits, splits=10)     # a float, {"mean": ..., "std": ...}

The network is torch-fidelity's `inception-v3-compat`, the one torchmetrics' FrechetInceptionDistance and InceptionScore
wrap and MAGVLT's evaluation used (kakaobrain/magvlt feat/eval eval_t2i.py). Torchvision's Inception-v3 has other
weights and another resize and gives other numbers: never mix the two. Images of any size go in as uint8 and the
extractor itself resizes them to 299 x 299 with its TF-1-compatible bilinear interpolation, as for the published
numbers. FID takes the 2048-d pool features; IS the 1008 logits without the bias (`logits_unbiased`, the default of both
libraries), over `splits` chunks of a fixed shuffle (torch-fidelity's seed).

Nothing is downloaded: the user gives the released `weights-inception-2015-12-05-6726825d.pth` (a torch-saved state
dict), checked against the SHA-256 prefix in its name (`vltk.weights`); a `.safetensors` copy of it works too, unchecked
(which is said). It is read with `weights_only=True`, so no pickled code from disk runs.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

from vltk.errors import VltkError
from vltk.weights import INCEPTION, require

NAME = "inception-v3-compat"  # torch-fidelity's name for this network
FEATURES = ["2048", "logits_unbiased"]
EXTRACTOR = "torch-fidelity inception-v3-compat (uint8 in, TF-1 bilinear resize to 299)"  # recorded beside the numbers


@dataclasses.dataclass(frozen=True)
class InceptionFeatures:
    pool: torch.Tensor  # (N, 2048) float32: FID's features
    logits: torch.Tensor  # (N, 1008) float32, without the bias: IS's logits


def _state_dict(weights: Path) -> dict[str, torch.Tensor]:
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch / safetensors raise many kinds for a foreign or truncated file: one line
        raise VltkError(f"{weights} is not a weights file torch can read safely ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}); give {INCEPTION.hint}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VltkError(f"{weights} holds a {type(state).__name__}, not a state dict of tensors; give {INCEPTION.hint}")
    return state


def load_inception(weights: Path, device: str | torch.device = "cpu") -> FeatureExtractorInceptionV3:
    """torch-fidelity's FID Inception with the weights at `weights`, in eval mode on `device`."""
    weights = Path(weights)
    require(weights, INCEPTION, "Inception weights")
    state = _state_dict(weights)
    # The library's constructor torch.load()s its weights argument with weights_only=False. It gets a buffer
    # serialised here from the tensors just read safely, so the user's file is never unpickled in full.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        net = FeatureExtractorInceptionV3(NAME, FEATURES, feature_extractor_weights_path=buffer)
    except RuntimeError as err:  # load_state_dict's missing / unexpected keys or shape mismatches
        detail = " ".join(str(err).split())[:300]
        raise VltkError(f"{weights} does not fit torch-fidelity's Inception-v3: {detail} "
                        f"(give {INCEPTION.hint})") from None
    return net.to(device)


def inception_features(net: FeatureExtractorInceptionV3, images: Iterable[np.ndarray], batch_size: int = 50,
                       advance: Callable[[int], None] | None = None) -> InceptionFeatures:
    """Pool features and unbiased logits of `images`, uint8 (H, W, 3) arrays of one size, read `batch_size` at a time
    (so a 30k-image set is never held in memory); `advance(n)` after each batch of n. No images: (0, D) tensors (one
    process's empty share of a distributed pass)."""
    device = next(net.parameters()).device
    images, pool, logits = iter(images), [], []
    while batch := list(itertools.islice(images, batch_size)):
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device)  # (B, 3, H, W) uint8
        with torch.inference_mode():
            features, unbiased = net(x)
        pool.append(features.cpu())
        logits.append(unbiased.cpu())
        if advance is not None:
            advance(len(batch))
    if not pool:
        return InceptionFeatures(torch.zeros(0, 2048), torch.zeros(0, 1008))
    return InceptionFeatures(torch.cat(pool), torch.cat(logits))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), by torch-fidelity's own function (float64 in)."""
    stats = [{"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64)}
             for mu, sigma in ((mu1, sigma1), (mu2, sigma2))]
    return fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]


def fid(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """The Fréchet distance of Gaussians fitted to two feature sets (N1, D) and (N2, D), N >= 2 each."""
    if len(features1) < 2 or len(features2) < 2:
        raise ValueError(f"FID needs at least 2 samples a side, got {len(features1)} and {len(features2)}")
    # float64 before the mean and covariance: float32 sums over 30k samples lose digits FID can see.
    stats = [fid_features_to_statistics(f.double()) for f in (features1, features2)]
    return frechet_distance(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"])


def inception_score(logits: torch.Tensor, splits: int = 10) -> dict[str, float]:
    """IS of (N, 1008) logits: exp(E KL(p(y|x) || p(y))) in each of `splits` chunks; their mean and std."""
    if len(logits) < splits:
        raise ValueError(f"IS over {splits} splits needs at least {splits} images, got {len(logits)}")
    scores = isc_features_to_metric(logits, splits=splits)
    return {"mean": scores[KEY_METRIC_ISC_MEAN], "std": scores[KEY_METRIC_ISC_STD]}
