"""GIVT's GMM head: the raw-output layouts and scale maps of big_vision givt.py, the NLL against torch.distributions and
a hand-written float64 density, the sampler's moments against the mixture's analytic ones, and the temperatures
(GIVT §3.4)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from vltk.models.gmm import GMM, GMMConfig, log_density, nll
from vltk.sampling.gmm import component, sample, sample_component


def raw_outputs(cfg: GMMConfig, *batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*batch, cfg.num_logits, generator=torch.Generator().manual_seed(seed))


def squareplus_by_hand(x: float) -> float:
    return (x + math.sqrt(x * x + 4)) / 2


def test_logit_counts_follow_big_vision():
    # k + 2kd, 3kd and d^2 + d (big_vision givt.py `get_pdf`): 16 + 512 = 528 for the released k = d = 16.
    assert GMMConfig(kind="diagonal", mixtures=16, channels=16).num_logits == 528
    assert GMMConfig(kind="per_channel", mixtures=4, channels=16).num_logits == 192
    assert GMMConfig(kind="full", mixtures=1, channels=16).num_logits == 272
    with pytest.raises(ValueError, match="one component"):
        GMMConfig(kind="full", mixtures=2)
    with pytest.raises(ValueError, match="mixtures"):
        GMMConfig(mixtures=0)


def test_diagonal_layout_and_squareplus_with_the_floor():
    # k = 2, d = 3 written out: [2 mixture logits | comp 0: 3 means, 3 raw scales | comp 1: 3 means, 3 raw scales].
    cfg = GMMConfig(kind="diagonal", mixtures=2, channels=3)
    raw = torch.tensor([0.5, -1.0, 1, 2, 3, 0.0, 1.0, -1e7, 4, 5, 6, -1.0, 2.0, 0.3])
    gmm = GMM.from_logits(raw, cfg, mixture_temperature=2.0)
    assert gmm.logits.tolist() == [1.0, -2.0]
    assert gmm.means.tolist() == [[1, 2, 3], [4, 5, 6]]
    expected = [[squareplus_by_hand(x) for x in (0.0, 1.0)] + [1e-6], [squareplus_by_hand(x) for x in (-1, 2, 0.3)]]
    torch.testing.assert_close(gmm.scales, torch.tensor(expected), rtol=1e-6, atol=0)
    assert gmm.scales[0, 0] == 1.0  # squareplus(0) = 1; squareplus(-1e7) ~ 1e-7 is floored to 1e-6
    softplus = GMM.from_logits(raw, GMMConfig(kind="diagonal", mixtures=2, channels=3, scale="softplus"))
    assert softplus.scales[1, 1].item() == pytest.approx(math.log1p(math.exp(2.0)))


def test_per_channel_layout():
    # [probs | locs | scales], each a (d, k) block in row-major order (big_vision reshapes to (3d, k) and splits).
    cfg = GMMConfig(kind="per_channel", mixtures=2, channels=3)
    raw = torch.arange(18.0)
    gmm = GMM.from_logits(raw, cfg)
    assert gmm.logits.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert gmm.means.squeeze(-1).tolist() == [[6, 7], [8, 9], [10, 11]]
    assert gmm.scales[2, 1, 0].item() == pytest.approx(squareplus_by_hand(17.0))


@pytest.mark.parametrize("kind", ["diagonal", "per_channel", "full"])
def test_zero_outputs_are_the_standard_normal(kind):
    cfg = GMMConfig(kind=kind, mixtures=1 if kind == "full" else 3, channels=4)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    gmm = GMM.from_logits(torch.zeros(5, cfg.num_logits), cfg)
    expected = 0.5 * z.square().sum(-1) + 2 * math.log(2 * math.pi)  # -log N(z; 0, I) with d = 4
    torch.testing.assert_close(nll(gmm, z), expected)


def test_diagonal_nll_equals_a_hand_written_float64_density_and_torch_distributions():
    cfg = GMMConfig(kind="diagonal", mixtures=3, channels=4)
    raw = raw_outputs(cfg, 2, 5)
    z = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(2))
    got = nll(GMM.from_logits(raw, cfg), z)
    assert got.shape == (2, 5) and got.dtype == torch.float32

    # Straight from the layout, in float64: sum_j pi_j prod_c N(z_c; mu_jc, sigma_jc).
    r = raw.double()
    pi = r[..., :3].softmax(-1)
    density = torch.zeros(2, 5, dtype=torch.float64)
    for j in range(3):
        block = r[..., 3 + 8 * j: 3 + 8 * (j + 1)]
        mu, s = block[..., :4], block[..., 4:]
        sigma = (s + torch.sqrt(s * s + 4)) / 2
        pdf = torch.exp(-0.5 * ((z.double() - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        density += pi[..., j] * pdf.prod(-1)
    torch.testing.assert_close(got.double(), -density.log(), rtol=1e-5, atol=1e-5)

    gmm = GMM.from_logits(raw, cfg)
    reference = D.MixtureSameFamily(D.Categorical(logits=gmm.logits),
                                    D.Independent(D.Normal(gmm.means, gmm.scales), 1))
    torch.testing.assert_close(got, -reference.log_prob(z), rtol=1e-5, atol=1e-5)


def test_per_channel_nll_is_the_sum_of_one_dimensional_mixtures():
    cfg = GMMConfig(kind="per_channel", mixtures=3, channels=4)
    raw = raw_outputs(cfg, 6)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    gmm = GMM.from_logits(raw, cfg)
    reference = D.MixtureSameFamily(D.Categorical(logits=gmm.logits), D.Normal(gmm.means[..., 0], gmm.scales[..., 0]))
    torch.testing.assert_close(nll(gmm, z), -reference.log_prob(z).sum(-1), rtol=1e-5, atol=1e-5)


def test_full_covariance_nll_equals_multivariate_normal():
    d = 3
    cfg = GMMConfig(kind="full", mixtures=1, channels=d)
    raw = raw_outputs(cfg, 4)
    z = torch.randn(4, d, generator=torch.Generator().manual_seed(4))
    # Layout: d^2 scale entries (row-major; lower triangle used, diagonal through squareplus), then d means.
    block = raw[:, :d * d].reshape(4, d, d)
    tril = block.tril(-1) + torch.diag_embed((block.diagonal(dim1=-2, dim2=-1) + torch.sqrt(
        block.diagonal(dim1=-2, dim2=-1) ** 2 + 4)) / 2)
    reference = D.MultivariateNormal(raw[:, d * d:], scale_tril=tril)
    gmm = GMM.from_logits(raw, cfg)
    torch.testing.assert_close(nll(gmm, z), -reference.log_prob(z), rtol=1e-5, atol=1e-5)
    # Variance scaling by t scales the covariance by t^2.
    hot = GMM.from_logits(raw, cfg, scale_temperature=0.5)
    scaled = D.MultivariateNormal(raw[:, d * d:], covariance_matrix=0.25 * reference.covariance_matrix)
    torch.testing.assert_close(nll(hot, z), -scaled.log_prob(z), rtol=1e-4, atol=1e-4)


def mixture_moments(gmm: GMM) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-channel variance of a diagonal mixture: sum pi mu, sum pi (sigma^2 + mu^2) - mean^2."""
    pi = gmm.logits.softmax(-1).unsqueeze(-1)
    mean = (pi * gmm.means).sum(-2)
    return mean, (pi * (gmm.scales ** 2 + gmm.means ** 2)).sum(-2) - mean ** 2


def test_sampler_matches_the_mixture_moments():
    cfg = GMMConfig(kind="diagonal", mixtures=3, channels=2)
    raw = torch.tensor([0.0, 1.0, -1.0, -2.0, 3.0, 0.5, -1.0, 1.0, 0.0, -0.5, 0.2, 4.0, -3.0, 1.5, 0.0])
    n = 200_000
    gmm = GMM.from_logits(raw.expand(n, -1), cfg)
    z, logp = sample(gmm, torch.Generator().manual_seed(0))
    assert z.shape == (n, 2) and logp.shape == (n,)
    torch.testing.assert_close(logp, log_density(gmm, z))
    mean, var = mixture_moments(GMM.from_logits(raw, cfg))
    assert torch.all((z.mean(0) - mean).abs() < 4 * torch.sqrt(var / n))  # 4 standard errors
    torch.testing.assert_close(z.var(0), var, rtol=0.02, atol=0)


def test_per_channel_sampler_draws_each_channel_from_its_own_mixture():
    cfg = GMMConfig(kind="per_channel", mixtures=2, channels=2)
    # Channel 0: pi = (0.5, 0.5) at -2 / +2 with sigma 1 -> var 5; channel 1: all weight on mean 3, sigma 1.
    logits = torch.tensor([[0.0, 0.0], [0.0, -40.0]])
    means = torch.tensor([[-2.0, 2.0], [3.0, 0.0]])
    raw = torch.cat([logits.flatten(), means.flatten(), torch.zeros(4)])
    z, _ = sample(GMM.from_logits(raw.expand(100_000, -1), cfg), torch.Generator().manual_seed(1))
    assert z.mean(0).tolist() == pytest.approx([0.0, 3.0], abs=0.04)
    assert z.var(0).tolist() == pytest.approx([5.0, 1.0], rel=0.03)


@pytest.mark.parametrize("t", [0.5, 0.95, 2.0])
def test_variance_scaling_scales_the_sample_standard_deviation_by_t(t):
    cfg = GMMConfig(kind="diagonal", mixtures=1, channels=2)
    raw = torch.tensor([0.0, 1.0, -1.0, 0.7, -0.3])  # sigma = squareplus(0.7), squareplus(-0.3)
    n = 100_000
    z, _ = sample(GMM.from_logits(raw.expand(n, -1), cfg, scale_temperature=t), torch.Generator().manual_seed(2))
    sigma = torch.tensor([squareplus_by_hand(0.7), squareplus_by_hand(-0.3)])
    torch.testing.assert_close(z.std(0), t * sigma, rtol=0.015, atol=0)
    assert z.mean(0).tolist() == pytest.approx([1.0, -1.0], abs=4 * t * 1.5 / math.sqrt(n))


def test_component_reduces_to_the_chosen_gaussian():
    cfg = GMMConfig(kind="diagonal", mixtures=3, channels=2)
    gmm = GMM.from_logits(raw_outputs(cfg, 4), cfg)
    index = torch.tensor([2, 0, 1, 2])
    one = component(gmm, index)
    assert one.logits.shape == (4, 1) and one.means.shape == (4, 1, 2)
    for b, j in enumerate(index.tolist()):
        assert torch.equal(one.means[b, 0], gmm.means[b, j]) and torch.equal(one.scales[b, 0], gmm.scales[b, j])
    z = torch.randn(4, 2)
    single = D.Independent(D.Normal(gmm.means[torch.arange(4), index], gmm.scales[torch.arange(4), index]), 1)
    torch.testing.assert_close(log_density(one, z), single.log_prob(z))
    # The index draw follows pi: a component with all the weight is always chosen.
    peaked = GMM.from_logits(torch.cat([torch.tensor([-30.0, 30.0, -30.0]), torch.zeros(12)]).expand(50, -1), cfg)
    assert sample_component(peaked, torch.Generator().manual_seed(0)).eq(1).all()
    per_channel = GMMConfig(kind="per_channel", mixtures=3, channels=2)
    pc = GMM.from_logits(raw_outputs(per_channel, 4), per_channel)
    assert sample_component(pc).shape == (4, 2) and component(pc, sample_component(pc)).means.shape == (4, 2, 1, 1)
