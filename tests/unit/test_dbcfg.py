"""DB-CFG (GIVT §3.4, App. D) against closed forms: the guided target of two Gaussians is a Gaussian (precision
(1+w)/s_c^2 - w/s_u^2, mean by completing the square), checked with a hand-computed Kolmogorov-Smirnov statistic."""

from __future__ import annotations

import math

import torch

from vltk.sampling.dbcfg import (at_component, guided_log_density, log_envelope, pick_component, rejection_sample,
                                 sample_guided)

N = 20000
KS_5_PERCENT = 1.36  # / sqrt(n): the asymptotic two-sided 5% critical value of the KS statistic


def ks_statistic(samples: torch.Tensor, mean: float, std: float) -> float:
    """sup |F_n - F| against N(mean, std^2) from the sorted samples: max over i of F(x_i) - (i-1)/n, i/n - F(x_i)."""
    x = samples.double().sort().values
    n = x.numel()
    cdf = torch.special.ndtr((x - mean) / std)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


def guided_gaussian(mu_c, s_c, mu_u, s_u, w):
    """The mean and std of N(mu_c, s_c)^(1+w) N(mu_u, s_u)^(-w), by hand (positive precision assumed)."""
    precision = (1 + w) / s_c ** 2 - w / s_u ** 2
    mean = ((1 + w) * mu_c / s_c ** 2 - w * mu_u / s_u ** 2) / precision
    return mean, 1 / math.sqrt(precision)


def constant(*values: float) -> list[torch.Tensor]:
    return [torch.full((N,), float(v)) for v in values]


def test_guided_log_density_is_the_weighted_difference_and_a_gaussian_up_to_a_constant():
    x = torch.tensor([-1.0, 0.3, 2.0])
    mu_c, s_c, mu_u, s_u, w = 0.5, 1.0, -0.5, 2.0, 0.7
    got = guided_log_density(x, torch.tensor(mu_c), torch.tensor(s_c), torch.tensor(mu_u), torch.tensor(s_u), w)
    for xi, gi in zip(x.tolist(), got.tolist()):
        log_c = -0.5 * ((xi - mu_c) / s_c) ** 2 - math.log(s_c * math.sqrt(2 * math.pi))
        log_u = -0.5 * ((xi - mu_u) / s_u) ** 2 - math.log(s_u * math.sqrt(2 * math.pi))
        assert math.isclose(gi, (1 + w) * log_c - w * log_u, rel_tol=1e-5)
    mean, std = guided_gaussian(mu_c, s_c, mu_u, s_u, w)
    log_gauss = -0.5 * ((x - mean) / std) ** 2
    assert torch.allclose(got - log_gauss, (got - log_gauss)[0].expand(3), atol=1e-5)  # same shape, other constant


def test_pick_component_follows_the_mixture_and_at_component_gathers_it():
    probs = torch.tensor([0.2, 0.5, 0.3])
    index = pick_component(probs.log().expand(2, N // 2, 3), torch.Generator().manual_seed(0))
    assert index.shape == (2, N // 2)
    assert torch.allclose(torch.bincount(index.flatten(), minlength=3).float() / N, probs, atol=0.015)
    params = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)  # (..., k=3, d=2)
    assert at_component(params, torch.tensor([2, 0])).tolist() == [[4.0, 5.0], [6.0, 7.0]]


def test_log_envelope_is_the_peak_over_the_proposal_peak():
    mu_c, s_c, mu_u, s_u, w = 0.5, 1.0, 0.5, 2.0, 1.0  # guided mode at mu_c = 0.5, on the grid
    mean, std = guided_gaussian(mu_c, s_c, mu_u, s_u, w)
    log_peak = (1 + w) * -math.log(s_c * math.sqrt(2 * math.pi)) \
        - w * (-0.5 * ((mean - mu_u) / s_u) ** 2 - math.log(s_u * math.sqrt(2 * math.pi)))
    log_q_peak = -math.log(2 * max(s_c, s_u) * math.sqrt(2 * math.pi))
    got = log_envelope(*[torch.tensor([v]) for v in (mu_c, s_c, mu_u, s_u)], w)
    assert math.isclose(got.item(), log_peak - log_q_peak, rel_tol=1e-5)


def test_zero_guidance_samples_the_conditional_gaussian():
    x, accepted, rate = rejection_sample(*constant(0.7, 0.4, -3.0, 1.5), 0.0, torch.Generator().manual_seed(0))
    assert accepted.all() and rate.item() == 1.0
    assert ks_statistic(x, 0.7, 0.4) < KS_5_PERCENT / math.sqrt(N)


def test_guided_samples_follow_the_closed_form_target_where_the_envelope_is_valid():
    # Valid regime (module docstring): mu_u = mu_c and s <= 2 max(s_c, s_u). Guidance sharpens (s_u > s_c) in the
    # first case and widens (s_u < s_c, s = 1.136 < 2) in the second.
    g = torch.Generator().manual_seed(1)
    for mu, s_c, s_u, w in [(0.5, 1.0, 2.0, 1.0), (-1.0, 1.0, 0.8, 0.4)]:
        x, accepted, rate = rejection_sample(*constant(mu, s_c, mu, s_u), w, g)
        assert rate.item() == 1.0
        mean, std = guided_gaussian(mu, s_c, mu, s_u, w)
        assert math.isclose(mean, mu, rel_tol=1e-9) and not math.isclose(std, s_c, rel_tol=0.05)
        assert ks_statistic(x, mean, std) < KS_5_PERCENT / math.sqrt(N)


def test_outside_the_valid_regime_the_draws_follow_the_reference_rule():
    # mu_u != mu_c: the target N(3, 1) exceeds M q near its mode, so the draws follow min(p~, M q) (the reference's
    # behaviour, kept on purpose), whose mean is integrated numerically here, not p~ itself.
    mu_c, s_c, mu_u, s_u, w = 0.0, 1.0, -3.0, 1.0, 1.0
    mean, std = guided_gaussian(mu_c, s_c, mu_u, s_u, w)
    assert (mean, std) == (3.0, 1.0)
    grid = torch.linspace(-15, 20, 350001, dtype=torch.float64)
    log_target = -0.5 * (grid - mean) ** 2  # unnormalised: its peak is exactly the grid's max, log 1 = 0
    log_envelope_curve = -0.5 * (grid / 2.0) ** 2  # M q(x) = peak * q(x) / q(mu_c), q = N(0, 2)
    law = torch.minimum(log_target, log_envelope_curve).exp()
    expected_mean = ((grid * law).sum() / law.sum()).item()
    assert 1.5 < expected_mean < 2.9  # biased towards mu_c
    x, _, rate = rejection_sample(*constant(mu_c, s_c, mu_u, s_u), w, torch.Generator().manual_seed(2))
    assert rate.item() == 1.0
    assert abs(x.mean().item() - expected_mean) < 4 * x.std().item() / math.sqrt(N)


def test_fallback_draws_the_conditional_gaussian_when_nothing_is_accepted():
    # Improper target ((1+w)/s_c^2 < w/s_u^2): log p~ = 22 x^2 + c peaks at the grid's edge |x| = 10, so M exceeds
    # p~ / q by more than e^700 anywhere within 4 std of the proposal N(0, 2).
    n = 4000
    x, accepted, rate = rejection_sample(*[torch.full((n,), v) for v in (0.0, 1.0, 0.0, 0.25)], 3.0,
                                         torch.Generator().manual_seed(3), proposals=20)
    assert not accepted.any() and rate.item() == 0.0
    assert ks_statistic(x, 0.0, 1.0) < KS_5_PERCENT / math.sqrt(n)


def test_chunking_keeps_the_law_and_the_shape():
    mu, s_c, s_u, w = 0.5, 1.0, 2.0, 1.0
    x, accepted, _ = rejection_sample(*[torch.full((100, 200), v) for v in (mu, s_c, mu, s_u)], w,
                                      torch.Generator().manual_seed(4), chunk_floats=1000)
    assert x.shape == accepted.shape == (100, 200) and accepted.all()
    mean, std = guided_gaussian(mu, s_c, mu, s_u, w)
    assert ks_statistic(x.flatten(), mean, std) < KS_5_PERCENT / math.sqrt(N)


def test_sample_guided_uses_the_conditional_component_for_both_passes():
    # Component 1 carries all the conditional mass; the unconditional logits would pick component 0, which is far
    # away and not even an input. The result is the valid-regime target of component 1.
    k_logits = torch.tensor([float("-inf"), 0.0]).expand(N, 2)
    means = torch.tensor([[100.0], [0.5]]).expand(N, 2, 1)  # (N, k=2, d=1)
    scales_c = torch.tensor([[1.0], [1.0]]).expand(N, 2, 1)
    scales_u = torch.tensor([[0.1], [2.0]]).expand(N, 2, 1)
    x, accepted, rate = sample_guided(k_logits, means, scales_c, means, scales_u, 1.0, torch.Generator().manual_seed(5))
    assert x.shape == (N, 1) and rate.item() == 1.0
    mean, std = guided_gaussian(0.5, 1.0, 0.5, 2.0, 1.0)
    assert ks_statistic(x.flatten(), mean, std) < KS_5_PERCENT / math.sqrt(N)


def test_the_mode_envelope_is_the_grid_s_where_the_grid_finds_the_peak():
    g = torch.Generator().manual_seed(5)
    mu_c, mu_u = torch.randn(500, generator=g), torch.randn(500, generator=g)
    s_c = 0.3 + torch.rand(500, generator=g)
    s_u = s_c * (0.9 + torch.rand(500, generator=g))  # s_u > 0.9 s_c: (1+w)/s_c^2 > w/s_u^2 at w = 0.4, a mode exists
    grid = log_envelope(mu_c, s_c, mu_u, s_u, 0.4, envelope="grid")
    mode = log_envelope(mu_c, s_c, mu_u, s_u, 0.4, envelope="mode")
    assert (mode >= grid - 1e-5).all() and (mode - grid).abs().max() < 2e-3  # the grid's step is 0.02


def test_the_mode_envelope_finds_a_peak_the_grid_misses():
    # sigma = 0.004 << the grid step 0.02: the guided mode mu_c + 0.011 lies 0.009 from the nearest grid point, 2.25
    # std away, so the grid's M is e^(2.25^2 / 2) = 12.6x too small (big_vision's grid rule); the mode's is exact.
    mu_c, s, w = 0.0, 0.004, 1.0
    mean, _ = guided_gaussian(mu_c, s, mu_c - 0.011, s, w)
    assert math.isclose(mean, 0.011)
    args = [torch.tensor([v]) for v in (mu_c, s, mu_c - 0.011, s)]
    gap = (log_envelope(*args, w, envelope="mode") - log_envelope(*args, w, envelope="grid")).item()
    assert math.isclose(gap, 0.5 * (0.009 / s) ** 2, rel_tol=1e-3)


def test_the_exact_envelope_draws_the_target_where_the_reference_rule_is_biased():
    # The case of test_outside_the_valid_regime...: p~ = N(3, 1), which the reference rule pulls towards mu_c = 0.
    x, accepted, rate = rejection_sample(*constant(0.0, 1.0, -3.0, 1.0), 1.0, torch.Generator().manual_seed(0),
                                         envelope="exact")
    assert accepted.all() and rate.item() == 1.0
    assert ks_statistic(x, 3.0, 1.0) < KS_5_PERCENT / math.sqrt(N)


def test_without_an_envelope_every_value_falls_back_at_once():
    # Improper target: no mode, so nothing is proposed and every value is the conditional draw.
    for envelope in ("mode", "exact"):
        x, accepted, rate = rejection_sample(*constant(0.0, 1.0, 0.0, 0.25), 3.0, torch.Generator().manual_seed(7),
                                             envelope=envelope)
        assert not accepted.any() and rate.item() == 0.0
        assert ks_statistic(x, 0.0, 1.0) < KS_5_PERCENT / math.sqrt(N)
