"""Self re-ranking against direct computations: MAGVLT's masked log-likelihood read one position at a time, ARGVLT's
causal log-likelihood decoded token by token through the KV cache, and the choice of the best candidate."""

from __future__ import annotations

import pytest
import torch

from vltk.models.argvlt import ARGVLT, ARGVLTConfig, sequence
from vltk.models.magvlt import MAGVLT, Inputs, MAGVLTConfig
from vltk.sampling.rerank import (
    argvlt_caption_logprob, best, magvlt_caption_logprob, pass_groups, self_scores,
)

N, C, VI, VT = 9, 6, 11, 13
EOS = VT - 1
LENGTHS = [3, 6, 1]  # n_txt, EOS included; 6 = C: a caption that fills the context has no EOS


def scaled(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights scaled up so that the log-probs differ clearly from position to position and token to token."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)
    return model.eval()


@pytest.fixture
def magvlt() -> MAGVLT:
    torch.manual_seed(0)
    return scaled(MAGVLT(MAGVLTConfig(width=16, depth=2, heads=2, dropout=0.0, attn_dropout=0.0, image_vocab=VI,
                                      text_vocab=VT, image_tokens=N, text_tokens=C)))


@pytest.fixture
def argvlt() -> ARGVLT:
    torch.manual_seed(0)
    return scaled(ARGVLT(ARGVLTConfig(width=16, depth=2, heads=2, dropout=0.0, attn_dropout=0.0, image_vocab=VI,
                                      text_vocab=VT, image_tokens=N, text_tokens=C)))


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N) codes, (B, C) EOS-padded rows (no EOS before n_txt - 1) and (B,) n_txt."""
    g = torch.Generator().manual_seed(3)
    image = torch.randint(VI, (len(LENGTHS), N), generator=g)
    text = torch.randint(EOS, (len(LENGTHS), C), generator=g)  # ids < EOS
    for row, n in zip(text, LENGTHS):
        row[n - 1 if n < C else C:] = EOS
    return image, text, torch.tensor(LENGTHS)


def masked_logprob(model: MAGVLT, image, text, n: int, masked: list[int], k: int) -> float:
    """log p(text[k]) for one sample, with the text positions `masked` masked and text_len n, read alone."""
    text_masked = torch.zeros(1, C, dtype=torch.bool)
    text_masked[0, masked] = True
    query = torch.zeros(1, C, dtype=torch.bool)
    query[0, k] = True
    x = Inputs("i2t", image[None], torch.zeros(1, N, dtype=torch.bool), text[None], text_masked, torch.tensor([n]))
    with torch.no_grad():
        logits = model(x, text_query=query).text_logits[0]  # (VT,)
    return logits.double().log_softmax(dim=-1)[text[k]].item()


def test_magvlt_score_is_the_sum_over_the_caption_with_every_token_masked(magvlt):
    image, text, lengths = batch()
    got = magvlt_caption_logprob(magvlt, image, text, lengths)
    want = [sum(masked_logprob(magvlt, image[b], text[b], n, list(range(n)), k) for k in range(n))
            for b, n in enumerate(LENGTHS)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-4)
    # The mean per token (EOS included) is what re-ranks: the text rows alone give n_txt.
    torch.testing.assert_close(self_scores(magvlt, image, text, eos_id=EOS), got / lengths)


def test_magvlt_pseudo_log_likelihood_masks_each_token_once(magvlt):
    image, text, lengths = batch()
    got = magvlt_caption_logprob(magvlt, image, text, lengths, passes=C, generator=torch.Generator().manual_seed(0))
    # passes >= n_txt: every token is read with only itself masked (the classic pseudo-log-likelihood).
    want = [sum(masked_logprob(magvlt, image[b], text[b], n, [k], k) for k in range(n))
            for b, n in enumerate(LENGTHS)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-4)


def test_pass_groups_split_the_window_evenly():
    window = torch.arange(8).unsqueeze(0) < torch.tensor([[8], [5], [1]])  # (3, 8)
    groups = pass_groups(window, 3, torch.Generator().manual_seed(0))
    for row, inside in zip(groups, window):
        sizes = torch.bincount(row[inside], minlength=3)
        assert sizes.sum() == inside.sum() and sizes.max() - sizes.min() <= 1  # each position in exactly one group


def test_argvlt_score_is_the_teacher_forced_log_likelihood(argvlt):
    image, text, lengths = batch()
    got = argvlt_caption_logprob(argvlt, image, text, lengths)
    want = []
    for b, n in enumerate(LENGTHS):  # token by token through the KV cache: [BOI, image, BOT] then each text token
        cache = argvlt.new_cache(batch=1)
        with torch.no_grad():
            logits = argvlt.step(cache, "i2t", sequence("i2t", image[b:b + 1], text[b:b + 1])[:, :N + 2])
            total = 0.0
            for k in range(n):
                total += logits[0].double().log_softmax(dim=-1)[text[b, k]].item()
                if k + 1 < n:
                    logits = argvlt.step(cache, "i2t", text[b:b + 1, k:k + 1])
        want.append(total)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(self_scores(argvlt, image, text, eos_id=EOS), got / lengths)


def test_best_takes_the_highest_score_and_the_first_of_ties():
    scores = torch.tensor([[0.1, 0.3, 0.9, 0.2], [-1.0, -2.0, -3.0, -4.0], [0.5, 0.7, 0.7, 0.1], [2.0, 2.0, 2.0, 2.0]])
    assert best(scores).tolist() == [2, 0, 1, 0]


def test_self_reranking_picks_the_constructed_best_caption(magvlt):
    """With every caption token masked, the positions' log-probs do not depend on the caption's tokens, so the caption
    made of each position's most likely token is the best of all captions of its length."""
    image = batch()[0][:1]
    n = 5  # 4 tokens + EOS
    masked = torch.arange(C).unsqueeze(0) < n
    x = Inputs("i2t", image, torch.zeros(1, N, dtype=torch.bool), torch.full((1, C), EOS), masked, torch.tensor([n]))
    with torch.no_grad():
        logits = magvlt(x, text_query=masked).text_logits  # (n, VT)
    top = torch.full((C,), EOS)
    top[:n - 1] = logits[:n - 1, :EOS].argmax(dim=-1)  # EOS kept out so that the length stays n
    g = torch.Generator().manual_seed(1)
    candidates = torch.full((2, 4, C), EOS)
    candidates[:, :, :n - 1] = torch.randint(EOS, (2, 4, n - 1), generator=g)
    candidates[0, 2], candidates[1, 0] = top, top  # prompt 0: candidate 2 is the best; prompt 1: candidate 0
    scores = self_scores(magvlt, image.expand(8, -1), candidates.view(8, C), eos_id=EOS).view(2, 4)
    assert best(scores).tolist() == [2, 0]
