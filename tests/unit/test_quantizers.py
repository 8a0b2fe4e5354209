"""The vector quantizer against hand-computed cases: straight-through gradients, legacy vs non-legacy loss weights,
EMA maths (taming's EMA VQ), k-means init, dead-code restart, usage/perplexity, cosine lookup, distributed sync."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from vltk.imagetok.config import QuantizerConfig
from vltk.imagetok.quantizers import VectorQuantizer, codebook_usage, perplexity


def as_map(vectors: list[list[float]]) -> torch.Tensor:
    """N vectors of width D -> a (1, D, 1, N) feature map, so position n holds vector n."""
    return torch.tensor(vectors).T[None, :, None, :].contiguous()


def quantizer(codebook: list[list[float]], **kwargs) -> VectorQuantizer:
    book = torch.tensor(codebook)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=book.shape[0], code_dim=book.shape[1], **kwargs))
    with torch.no_grad():
        vq.codebook.copy_(book)
        if vq.cfg.ema:
            vq.ema_sum.copy_(book)
    return vq


def test_straight_through_gradient_is_the_identity():
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=16, code_dim=4)).eval()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    weights = torch.randn(2, 4, 3, 3)
    out = vq(z)
    (out.z_q * weights).sum().backward()
    assert torch.equal(z.grad, weights)  # d/dz of sum(w * z), as if z_q were z
    assert torch.allclose(out.z_q, vq.lookup(out.codes))  # but the forward value is the codes' vectors
    distances = ((z.detach().permute(0, 2, 3, 1)[..., None, :] - vq.codebook.detach()) ** 2).sum(-1)
    assert torch.equal(out.codes, distances.argmin(-1))


@pytest.mark.parametrize("legacy", [True, False])
def test_loss_weights_legacy_and_not(legacy):
    # One vector z = (0.2, 0.1), nearest code e0 = (0, 0): both terms are mean((z - e)^2) = 0.025. They differ in
    # where the gradient goes: commitment -> z with d/dz = (z - e) (2/N, N = 2 elements); codebook -> e.
    vq = quantizer([[0.0, 0.0], [1.0, 1.0]], beta=0.25, legacy=legacy).eval()
    z = as_map([[0.2, 0.1]]).requires_grad_()
    out = vq(z)
    assert out.loss.item() == pytest.approx(1.25 * 0.025)
    out.loss.backward()
    z_weight, code_weight = (1.0, 0.25) if legacy else (0.25, 1.0)
    assert torch.allclose(z.grad.flatten(), z_weight * torch.tensor([0.2, 0.1]))
    assert torch.allclose(vq.codebook.grad, torch.tensor([[-0.2, -0.1], [0.0, 0.0]]) * code_weight)
    assert out.stats["commitment"] == pytest.approx(0.025) and out.stats["codebook"] == pytest.approx(0.025)


def test_ema_update_hand_computed():
    vq = quantizer([[0.0, 0.0], [1.0, 1.0]], ema=True, ema_decay=0.5, beta=0.25).train()
    assert not list(vq.parameters())  # the codebook is learnt by EMA only
    z = as_map([[0.1, 0.0], [0.3, 0.2], [0.9, 1.1]])  # codes 0, 0, 1
    out = vq(z)
    assert out.codes.flatten().tolist() == [0, 0, 1]
    # counts (2, 1): ema_count = 0.5 * 1 + 0.5 * (2, 1) = (1.5, 1.0)
    assert torch.allclose(vq.ema_count, torch.tensor([1.5, 1.0]))
    # sums ((0.4, 0.2), (0.9, 1.1)): ema_sum = 0.5 * old codebook + 0.5 * sums
    assert torch.allclose(vq.ema_sum, torch.tensor([[0.2, 0.1], [0.95, 1.05]]))
    # Laplace smoothing with n = 2.5, K = 2, eps = 1e-5: size_k = (c_k + eps) / (n + 2 eps) * n
    sizes = [(c + 1e-5) / (2.5 + 2e-5) * 2.5 for c in (1.5, 1.0)]
    expected = torch.tensor([[0.2 / sizes[0], 0.1 / sizes[0]], [0.95 / sizes[1], 1.05 / sizes[1]]])
    assert torch.allclose(vq.codebook, expected, atol=1e-6)
    # the loss keeps only the commitment term, times beta: mean over 6 elements of the squared errors to old codes
    errors = [0.1**2, 0.0, 0.3**2, 0.2**2, 0.1**2, 0.1**2]
    assert out.loss.item() == pytest.approx(0.25 * sum(errors) / 6)


def test_uniform_init_range():
    book = VectorQuantizer(QuantizerConfig(codebook_size=64, code_dim=16)).codebook
    assert book.abs().max() <= 1 / 64 and book.std() > 0.5 / 64 / 3**0.5  # U(-1/K, 1/K) has std 1/(K sqrt 3)


def test_no_updates_in_eval_mode():
    vq = quantizer([[0.0, 0.0], [1.0, 1.0]], ema=True, dead_code_threshold=5.0).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(as_map([[0.1, 0.0], [0.9, 1.1]]))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_encode_is_a_pure_lookup_even_in_training_mode():
    vq = quantizer([[0.0, 0.0], [1.0, 1.0]], ema=True, dead_code_threshold=5.0).train()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    z = as_map([[0.1, 0.0], [0.9, 1.1], [0.7, 0.4]])
    assert vq.encode(z).flatten().tolist() == [0, 1, 1]
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_kmeans_init_once_and_survives_save_load():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    points = (centres[:, None, :] + 0.1 * torch.randn(3, 40, 2)).reshape(-1, 2)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=3, code_dim=2, init="kmeans", kmeans_iters=10)).train()
    assert not vq.initialized
    vq(as_map(points.tolist()))
    assert vq.initialized
    # Lloyd's fixed point: every code is the mean of the points nearest to it, and the codes come from the data
    assign = vq.nearest(points)
    for k in assign.unique():
        assert torch.allclose(vq.codebook[k], points[assign == k].mean(0), atol=1e-5)
    assert vq.codebook.abs().max() > 1  # not U(-1/3, 1/3)
    fresh = VectorQuantizer(QuantizerConfig(codebook_size=3, code_dim=2, init="kmeans")).train()
    fresh.load_state_dict(vq.state_dict())
    book = fresh.codebook.detach().clone()
    fresh(as_map((points + 3).tolist()))  # a different batch: no second k-means (and no optimizer step here)
    assert torch.equal(fresh.codebook, book)


def test_restart_replaces_exactly_the_dead_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=6, code_dim=3, dead_code_threshold=0.5))
    with torch.no_grad():
        vq.ema_count.copy_(torch.tensor([1.0, 0.1, 1.0, 0.2, 1.0, 0.6]))
    before = vq.codebook.detach().clone()
    batch = torch.randn(10, 3)
    assert vq.restart_dead_codes(batch, generator=torch.Generator().manual_seed(1)) == 2
    for k in range(6):
        if k in (1, 3):
            assert any(torch.equal(vq.codebook[k], row) for row in batch)
            assert vq.ema_count[k] == 0.5
        else:
            assert torch.equal(vq.codebook[k], before[k])
    assert not torch.equal(vq.codebook[1], vq.codebook[3])  # drawn without replacement
    # the same generator seed picks the same rows
    again = VectorQuantizer(QuantizerConfig(codebook_size=6, code_dim=3, dead_code_threshold=0.5))
    again.load_state_dict({**vq.state_dict(), "codebook": before,
                           "ema_count": torch.tensor([1.0, 0.1, 1.0, 0.2, 1.0, 0.6])})
    again.restart_dead_codes(batch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.codebook, vq.codebook)


@pytest.mark.parametrize("ema", [True, False])
def test_training_forward_restarts_unused_codes(ema):
    # Data near code 0 only: after one step codes 1..3 have EMA count 0.99 < 1; the next step restarts them at data
    # vectors before quantising, so a learned codebook still gets a clean backward pass.
    vq = quantizer([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]], ema=ema, dead_code_threshold=1.0).train()
    data = [[0.1, 0.2], [0.3, -0.1], [-0.2, 0.0], [0.0, 0.4]]
    assert vq(as_map(data)).stats["restarted"] == 0.0
    z = as_map(data).requires_grad_()
    out = vq(z)
    assert out.stats["restarted"] == 3.0
    (out.loss + out.z_q.sum()).backward()  # no in-place error, and gradients reach both encoder output and codebook
    assert z.grad is not None and (ema or vq.codebook.grad is not None)
    rows = torch.tensor(data)
    for k in (1, 2, 3):
        assert any(torch.allclose(vq.codebook[k], row) for row in rows)


def test_usage_and_perplexity_on_known_histograms():
    assert codebook_usage(torch.tensor([0, 0, 1, 1]), 4) == 0.5
    assert perplexity(torch.tensor([0, 0, 1, 1]), 4) == pytest.approx(2.0)
    assert perplexity(torch.arange(8), 8) == pytest.approx(8.0)
    assert perplexity(torch.zeros(5, dtype=torch.long), 8) == pytest.approx(1.0)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert perplexity(torch.tensor([[2, 2], [2, 1]]), 4) == pytest.approx(math.exp(entropy))


def test_l2_norm_looks_up_by_cosine():
    z = as_map([[0.5, 1.2]])  # L2-nearest to (1, 0), but closer in angle to (0, 3)
    assert quantizer([[1.0, 0.0], [0.0, 3.0]]).eval()(z).codes.item() == 0
    out = quantizer([[1.0, 0.0], [0.0, 3.0]], l2_norm=True).eval()(z)
    assert out.codes.item() == 1
    assert torch.allclose(out.z_q.flatten(), torch.tensor([0.0, 1.0]))  # the unit-length code


def test_quantizes_in_float32_under_autocast():
    vq = VectorQuantizer(QuantizerConfig(codebook_size=8, code_dim=4)).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(torch.randn(1, 4, 2, 2).bfloat16())
    assert out.z_q.dtype == torch.float32


def _sync_worker(rank: int, world: int, init_file: str, batches: torch.Tensor, results) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different RNG per process: only the broadcast keeps restarts in sync
    vq = quantizer([[0.0, 0.0], [1.0, 1.0], [30.0, 30.0]], ema=True, ema_decay=0.5, dead_code_threshold=0.9).train()
    vq(as_map(batches[rank].tolist()))  # code 2 dies (EMA count 0.5 < 0.9) ...
    vq.restart_dead_codes(batches[rank])  # ... and is restarted from this process's vectors, broadcast from rank 0
    results[rank] = {k: v.clone() for k, v in vq.state_dict().items()}
    torch.distributed.destroy_process_group()


def test_distributed_ema_equals_one_process_on_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    batches = torch.rand(2, 3, 2)  # two processes' halves; every vector is nearest to code 0 or 1, code 2 dies
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_sync_worker, args=(2, str(tmp_path / "init"), batches, results), nprocs=2,
                           start_method="fork")
        states = [results[0], results[1]]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    whole = quantizer([[0.0, 0.0], [1.0, 1.0], [30.0, 30.0]], ema=True, ema_decay=0.5).train()
    whole(as_map(batches.reshape(-1, 2).tolist()))
    assert torch.allclose(states[0]["ema_count"][:2], whole.ema_count[:2])
    assert torch.allclose(states[0]["codebook"][:2], whole.codebook[:2])
    assert any(torch.equal(states[0]["codebook"][2], row) for row in batches.reshape(-1, 2))  # restarted, in sync
