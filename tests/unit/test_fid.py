"""FID / IS: the Fréchet distance against its closed form, IS on hand-made logits, and the Inception extractor loaded
from a random-init file in the released weights' format."""

from __future__ import annotations

import io
import math
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from vltk.errors import VltkError
from vltk.metrics.fid import fid, frechet_distance, inception_features, inception_score, load_inception


def closed_form(mu1, var1, mu2, var2) -> float:
    """FID of N(mu1, Q diag(var1) Q^T) and N(mu2, Q diag(var2) Q^T): the covariances commute, so (S1 S2)^(1/2) is
    Q diag(sqrt(var1 var2)) Q^T and its trace is sum sqrt(var1 var2)."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2)))


MU1, MU2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 0.0, -1.0])
VAR1, VAR2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
Q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]  # a random rotation


def test_frechet_distance_closed_form():
    expected = closed_form(MU1, VAR1, MU2, VAR2)
    # By hand: 0.25 + 1 + 1 + (1 + 2 - 2 sqrt 2) + (4 + 1 - 4) + (0.25 + 1 - 1)
    assert expected == pytest.approx(2.25 + 3 - 2 * math.sqrt(2) + 1 + 0.25)
    assert frechet_distance(MU1, np.diag(VAR1), MU2, np.diag(VAR2)) == pytest.approx(expected, rel=1e-9)
    rotated = [Q @ np.diag(v) @ Q.T for v in (VAR1, VAR2)]  # commuting, not diagonal
    assert frechet_distance(Q @ MU1, rotated[0], Q @ MU2, rotated[1]) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(MU1, np.diag(VAR1), MU1, np.diag(VAR1)) == pytest.approx(0, abs=1e-9)


def test_fid_of_samples_converges_to_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    n = 200_000

    def draw(mu, var):  # rows of N(Q mu, Q diag(var) Q^T)
        z = torch.randn(n, 3, generator=generator, dtype=torch.float64) * torch.tensor(var).sqrt()
        return (z + torch.tensor(mu)) @ torch.tensor(Q).T

    assert fid(draw(MU1, VAR1), draw(MU2, VAR2)) == pytest.approx(closed_form(MU1, VAR1, MU2, VAR2), rel=0.01)
    with pytest.raises(ValueError):
        fid(torch.zeros(1, 3), torch.zeros(5, 3))


def test_inception_score_hand_computed():
    # Four images, each certain of its own class (softmax ~ one-hot): p(y) is uniform over 4 classes, every
    # KL(p(y|x) || p(y)) = log 4, so IS = 4 with one split; two splits of two images: 2 in each.
    logits = torch.zeros(4, 1008)
    logits[torch.arange(4), torch.arange(4)] = 100.0
    assert inception_score(logits, splits=1)["mean"] == pytest.approx(4.0, rel=1e-6)
    assert inception_score(logits, splits=2) == pytest.approx({"mean": 2.0, "std": 0.0}, abs=1e-6)
    # All images sure of the same class: p(y|x) = p(y), IS = 1.
    assert inception_score(torch.zeros(4, 1008).index_fill_(1, torch.tensor([7]), 100.0), splits=2)["mean"] == \
        pytest.approx(1.0)
    with pytest.raises(ValueError):
        inception_score(logits, splits=10)


@pytest.fixture(scope="module")
def random_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception-v3 with random weights: its constructor always loads weights, so the load is
    skipped; convolutions get He init so activations survive the 94 layers (the default init shrinks them to ~1e-8)."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict"):
        net = FeatureExtractorInceptionV3("random", ["2048"], feature_extractor_weights_path=empty)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net.state_dict()


def test_extractor_loads_the_released_format(tmp_path, random_state):
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(random_state, weights)  # the released file: torch.save of the state dict
    net = load_inception(weights)
    images = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(2)]
    features = inception_features(net, images, batch_size=2)
    assert features.pool.shape == (2, 2048) and features.logits.shape == (2, 1008)
    assert torch.isfinite(features.pool).all() and features.pool.abs().sum() > 0
    # IS's logits are the fc layer without its bias (torchmetrics' and torch-fidelity's "logits_unbiased").
    torch.testing.assert_close(features.logits, features.pool @ random_state["fc.weight"].T, rtol=1e-4, atol=1e-5)


def test_extractor_loads_safetensors(tmp_path, random_state):
    weights = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in random_state.items()}, weights)
    loaded = load_inception(weights).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in random_state.items())


def test_extractor_errors(tmp_path):
    with pytest.raises(VltkError, match="not found"):
        load_inception(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(VltkError, match="garbage.pth is not a weights file"):
        load_inception(garbage)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(VltkError, match="does not fit torch-fidelity's Inception-v3") as err:
        load_inception(other)
    assert "\n" not in str(err.value)
    pickled = tmp_path / "pickled.pth"
    torch.save({"fc.weight": np.zeros(2)}, pickled)  # an arbitrary object: weights_only refuses to unpickle it
    with pytest.raises(VltkError, match="pickled.pth is not a weights file"):
        load_inception(pickled)
