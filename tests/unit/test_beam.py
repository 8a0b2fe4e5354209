"""Beam search with fans on small Markov chains whose sequences can be enumerated: hand-computed beams, brute force,
ancestral sampling and the softmax law of the stochastic top-k."""

from __future__ import annotations

import itertools
import math

import torch

from vltk.sampling.beam import beam_search
from vltk.sampling.common import sample


class Enumerate:
    """Fans that cover the support: every value 0..V-1 once per row, in order (n must be V)."""

    def __init__(self, logp: torch.Tensor):
        self.logp = logp  # (R, V)

    def sample(self, n, generator):
        r, v = self.logp.shape
        assert n == v
        return torch.arange(v).unsqueeze(1).expand(v, r), self.logp.T


class Categorical:
    """n independent draws per row from softmax(logp)."""

    def __init__(self, logp: torch.Tensor):
        self.logp = logp  # (R, V)

    def sample(self, n, generator):
        ids, _ = sample(self.logp.expand(n, *self.logp.shape), generator)  # (n, R)
        return ids, self.logp.T.gather(0, ids)


class Chain:
    """A Markov chain per sample. The state is a cache-like (R, 1 + t) history, column 0 the sample id: reordering it
    wrongly would condition a beam on another beam's past."""

    def __init__(self, first: list[list[float]], next_probs, fan=Enumerate):
        self.first = torch.tensor(first).log()  # (samples, V)
        self.next_probs = next_probs  # history tuple -> list of V probabilities
        self.fan = fan
        self.reorders: list[list[int]] = []

    def init_state(self, batch: int) -> torch.Tensor:
        return torch.arange(batch).unsqueeze(1)

    def step(self, state, last):
        if last is not None:
            state = torch.cat([state, last.unsqueeze(1)], dim=1)
        rows = [self.first[row[0]] if len(row) == 1 else torch.tensor(self.next_probs(tuple(row[1:]))).log()
                for row in state.tolist()]
        return state, self.fan(torch.stack(rows))

    def reorder(self, state, index):
        self.reorders.append(index.tolist())
        return state[index]

    def log_likelihood(self, sample_id: int, sequence: tuple[int, ...]) -> float:
        return self.first[sample_id, sequence[0]].item() + sum(
            math.log(self.next_probs(sequence[:t])[sequence[t]]) for t in range(1, len(sequence)))

    def search(self, batch, beams, fans, length, generator=None, **kwargs):
        return beam_search(self.step, self.init_state(batch), batch=batch, beams=beams, fans=fans, length=length,
                           generator=generator, reorder_fn=self.reorder, **kwargs)


FIRST_ORDER = {0: [0.55, 0.45], 1: [0.9, 0.1]}


def first_order(history):
    return FIRST_ORDER[history[-1]]


def test_beams_by_hand_with_their_parent_indices():
    chain = Chain([[0.6, 0.4], [0.3, 0.7]], first_order)
    tokens, logp = chain.search(batch=2, beams=2, fans=2, length=3)
    # Step 0: sample 0 keeps (0: .6), (1: .4), sample 1 keeps (1: .7), (0: .3): every beam's parent is its sample's row.
    # Step 1: sample 0's candidates .33 .27 | .36 .04 keep (1,0) .36 from beam 1 and (0,0) .33 from beam 0;
    #         sample 1's .63 .07 | .165 .135 keep (1,0) .63 from beam 0 and (0,0) .165 from beam 1 (rows 2 + 0, 2 + 1).
    assert chain.reorders == [[0, 0, 1, 1], [1, 0, 2, 3]]  # none after the last step
    # Step 2: sample 0's best is (1,0,0) = .36 * .55 = .198; sample 1's is (1,0,0) = .63 * .55 = .3465.
    assert tokens.tolist() == [[1, 0, 0], [1, 0, 0]]
    assert torch.allclose(logp, torch.tensor([0.198, 0.3465]).log())
    # Two beams miss sample 0's best sequence, (0,1,0) = .6 * .45 * .9 = .243; enough beams find it, and one beam is
    # greedy: (0,0,0) = .6 * .55 * .55 = .1815.
    tokens, logp = Chain([[0.6, 0.4]], first_order).search(batch=1, beams=4, fans=2, length=3)
    assert tokens.tolist() == [[0, 1, 0]] and math.isclose(logp.item(), math.log(0.243), rel_tol=1e-5)
    tokens, logp = Chain([[0.6, 0.4]], first_order).search(batch=1, beams=1, fans=2, length=3)
    assert tokens.tolist() == [[0, 0, 0]] and math.isclose(logp.item(), math.log(0.1815), rel_tol=1e-5)


def test_beams_covering_every_sequence_find_the_brute_force_optimum():
    v, length = 3, 4
    g = torch.Generator().manual_seed(0)
    table = torch.rand(v + 1, v, v, generator=g).add(0.05)  # second order; index v stands for "no token before"
    table = (table / table.sum(-1, keepdim=True)).tolist()

    def second_order(history):
        return table[history[-2] if len(history) > 1 else v][history[-1]]

    first = (torch.rand(2, v, generator=g) + 0.05)
    chain = Chain((first / first.sum(-1, keepdim=True)).tolist(), second_order)
    tokens, logp = chain.search(batch=2, beams=v ** length, fans=v, length=length)
    for s in range(2):
        scores = {seq: chain.log_likelihood(s, seq) for seq in itertools.product(range(v), repeat=length)}
        best = max(scores, key=scores.get)
        assert tuple(tokens[s].tolist()) == best
        assert math.isclose(logp[s].item(), scores[best], rel_tol=1e-5)


def test_one_beam_one_fan_is_ancestral_sampling():
    chain = Chain([[0.2, 0.5, 0.3]] * 5, lambda h: [[0.1, 0.6, 0.3], [0.5, 0.25, 0.25], [0.3, 0.3, 0.4]][h[-1]],
                  fan=Categorical)
    tokens, logp = chain.search(batch=5, beams=1, fans=1, length=6, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    state, last, drawn = chain.init_state(5), None, []
    for _ in range(6):
        state, fan = chain.step(state, last)
        last = fan.sample(1, g)[0][0]  # (5,)
        drawn.append(last)
    expected = torch.stack(drawn, dim=1)  # (5, 6)
    assert torch.equal(tokens, expected)
    assert torch.allclose(logp, torch.tensor([chain.log_likelihood(s, tuple(expected[s].tolist())) for s in range(5)]))
    assert all(index == list(range(5)) for index in chain.reorders)


def test_stochastic_top_k_draws_from_the_tempered_softmax():
    probs = torch.tensor([0.2, 0.5, 0.3])
    n = 20000
    for temperature in (1.0, 2.0):
        chain = Chain([probs.tolist()], None)
        chain.init_state = lambda batch: torch.zeros(batch, 1, dtype=torch.long)  # every row is sample 0
        tokens, _ = chain.search(batch=n, beams=1, fans=3, length=1, generator=torch.Generator().manual_seed(0),
                                 rand_top_k=True, rand_top_k_temperature=temperature)
        law = probs ** (1 / temperature)
        freq = torch.bincount(tokens.flatten(), minlength=3).float() / n
        assert torch.allclose(freq, law / law.sum(), atol=0.015)
