"""GIVT's iRevNet adapter (GIVT §3.3, App. B): exact inverse, unit Jacobian determinant, and the paper's ~112k
parameters for d = 16 with bottleneck 64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vltk.models.adapter import Adapter, AdapterConfig


def randomised(adapter: Adapter, seed: int = 0) -> Adapter:
    """Random GroupNorm affines too, so that no part of F is the identity at init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in adapter.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=g))
    return adapter


def test_parameter_count_matches_the_paper():
    # By hand for d = 16, bottleneck 64 (halves: 8 channels in, 32 hidden): convs 9 * (8*32 + 32*32 + 32*8) = 13,824
    # per block; GroupNorm scale + bias 2 * (8 + 32 + 32) = 144, or 128 in the first block (no leading GN).
    adapter = Adapter(AdapterConfig(), channels=16)
    count = sum(p.numel() for p in adapter.parameters())
    assert count == 8 * 13_824 + 7 * 144 + 128 == 111_728
    assert count == pytest.approx(112_000, rel=0.01)  # the paper's "112k"
    assert {m.num_groups for m in adapter.modules() if isinstance(m, nn.GroupNorm)} == {8}  # min(32, d/2)


def test_inverse_undoes_forward():
    torch.manual_seed(0)
    adapter = randomised(Adapter(AdapterConfig(), channels=16)).eval()
    z = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = adapter(z)
        assert y.shape == z.shape and not torch.allclose(y, z, atol=1e-2)
        torch.testing.assert_close(adapter.inverse(y), z, rtol=0, atol=1e-5)
        torch.testing.assert_close(adapter(adapter.inverse(z)), z, rtol=0, atol=1e-5)


def test_jacobian_determinant_is_one():
    torch.manual_seed(1)
    adapter = randomised(Adapter(AdapterConfig(blocks=3), channels=4), seed=1).double().eval()
    z = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda x: adapter(x).flatten(), z).reshape(16, 16)
    assert not torch.allclose(jacobian, torch.eye(16, dtype=torch.float64))  # a real map, not a permutation
    assert torch.linalg.det(jacobian).item() == pytest.approx(1.0, abs=1e-9)


def test_bad_channel_counts_are_refused():
    with pytest.raises(ValueError, match="even"):
        Adapter(AdapterConfig(), channels=5)
    with pytest.raises(ValueError, match="GroupNorm"):
        Adapter(AdapterConfig(bottleneck=20), channels=16)  # 10 hidden channels, 8 groups
