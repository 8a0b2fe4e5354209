"""Self re-ranking: the generator scores each (image, caption) candidate by its own likelihood of the caption.

    scores = self_scores(model, codes, text, eos_id=tok.eos_id)   # (B,) mean log p per caption token, float32
    chosen = best(scores.view(prompts, candidates))               # (P,) the best candidate of each prompt

The score is log p(caption | image) per caption token, over the caption's n_txt tokens (EOS included, pads never):
- MAGVLT, image-first layout with text_len = n_txt: by default one pass with every caption token masked, summing
  log p(t_k | image, all n_txt masked), the fully masked case of the I2T objective (MAGVLT §3.1, eq. 1). `passes` P > 1
  gives a pseudo-log-likelihood instead: the n_txt positions are split at random into P disjoint groups of near-equal
  size, pass p masks group p and shows the rest of the caption, and each token's log-prob is read in the one pass that
  masked it (P >= n_txt: every token given all the others). P forward passes.
- ARGVLT: the exact causal log-likelihood in the i2t order [BOI, image, BOT, text], teacher-forced in one pass.
- GIVT (its images are continuous latents, it has no caption model): the pointwise mutual information of the
  condition and the image per token, (log p(z | c) - log p(z | no condition)) / L, both in one forward of 2B rows (the
  conditional rows, then the same rows dropped as CFG trains them). Causal: the exact log-likelihoods; MaskGIT: every
  token masked, so each term is log p(z_i | c) of the all-masked step, the model's first guess at every position.
The sum is divided by n_txt: for i2t the candidates are captions of different lengths, and a sum would favour the short
ones; for t2i / inpainting the candidates share one caption, so the sum and the mean rank them the same. Log-softmax
runs in float32 whatever precision the model ran in (vltk's choice).
"""

from __future__ import annotations

import torch

from vltk.masking import prefix_mask
from vltk.models.argvlt import ARGVLT
from vltk.models.givt import GIVT
from vltk.models.gmm import GMM, log_density
from vltk.models.magvlt import MAGVLT, Inputs
from vltk.sampling.magvlt import window_lengths


def _token_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M,) float32 log p of the (M,) targets under (M, V) logits."""
    return logits.float().log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _row_sums(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(B,) sums per row of the (M,) values laid out row-major over the (B, C) bool `where`."""
    return torch.zeros(where.shape, device=where.device).masked_scatter(where, values).sum(dim=1)


def pass_groups(window: torch.Tensor, passes: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, C) long group 0..passes-1 of every position: the window's positions (B, C) bool in a random order, dealt
    round-robin, so that the groups of a row differ in size by at most one (positions outside the window: any)."""
    noise = torch.rand(window.shape, generator=generator, device=window.device).masked_fill(~window, 2.0)
    return noise.argsort(dim=1).argsort(dim=1) % passes  # (B, C): rank in the random order, window first


@torch.no_grad()
def magvlt_caption_logprob(model: MAGVLT, image: torch.Tensor, text: torch.Tensor, lengths: torch.Tensor,
                           passes: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) float32 sum of log p(t_k | image, ...) over the first lengths[b] tokens of (B, C) `text`, given (B, N)
    codes; `passes` as the module docstring (1: all caption tokens masked at once)."""
    model.eval()
    window = prefix_mask(lengths, text.shape[1])  # (B, C)
    groups = pass_groups(window, passes, generator) if passes > 1 else torch.zeros_like(text)
    no_image_mask = torch.zeros_like(image, dtype=torch.bool)
    total = torch.zeros(text.shape[0], device=text.device)
    for p in range(passes):
        masked = window & (groups == p)  # (B, C)
        if not masked.any():
            continue
        logits = model(Inputs("i2t", image, no_image_mask, text, masked, lengths), text_query=masked).text_logits
        total = total + _row_sums(_token_logprob(logits, text[masked]), masked)
    return total


@torch.no_grad()
def argvlt_caption_logprob(model: ARGVLT, image: torch.Tensor, text: torch.Tensor,
                           lengths: torch.Tensor) -> torch.Tensor:
    """(B,) float32 sum of log p(t_k | image, t_<k) over the first lengths[b] tokens of (B, C) `text`, given (B, N)
    codes: one teacher-forced pass in the i2t order."""
    model.eval()
    window = prefix_mask(lengths, text.shape[1])  # (B, C)
    logits = model("i2t", image, text, text_query=window).text_logits
    return _row_sums(_token_logprob(logits, text[window]), window)


def self_scores(model: MAGVLT | ARGVLT, image: torch.Tensor, text: torch.Tensor, *, eos_id: int, passes: int = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) float32 mean log p per caption token of the (B, C) EOS-padded `text` rows given the (B, N) codes; n_txt =
    first EOS + 1 (C without one). `passes` and `generator` are MAGVLT's (ARGVLT's score is exact in one pass)."""
    lengths = window_lengths(text, eos_id)  # (B,)
    if isinstance(model, MAGVLT):
        total = magvlt_caption_logprob(model, image, text, lengths, passes, generator)
    elif isinstance(model, ARGVLT):
        total = argvlt_caption_logprob(model, image, text, lengths)
    else:
        raise TypeError(f"self re-ranking scores with MAGVLT or ARGVLT, not {type(model).__name__}")
    return total / lengths


@torch.no_grad()
def givt_scores(model: GIVT, latents: torch.Tensor, labels: torch.Tensor | None = None,
                text: torch.Tensor | None = None, text_len: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) float32 per-token pointwise mutual information of the condition and the image's (B, L, d) VAE latents
    (mapped through the adapter, when the model has one, to the tokens it models)."""
    tokens = model.adapt(latents)
    b, length = tokens.shape[:2]
    both = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
    drop = torch.arange(2 * b, device=tokens.device) >= b  # (2B,) the second half unconditional
    masked = None if model.cfg.variant == "causal" else torch.ones(2 * b, length, dtype=torch.bool,
                                                                   device=tokens.device)
    raw = model(both(tokens), both(labels), both(text), both(text_len), drop=drop, masked=masked)
    logp = log_density(GMM.from_logits(raw, model.cfg.gmm), both(tokens)).sum(-1)  # (2B,)
    return (logp[:b] - logp[b:]) / length


def best(scores: torch.Tensor) -> torch.Tensor:
    """(P, N) scores of N candidates for each of P prompts -> (P,) long index of each prompt's best candidate; ties go
    to the first of them (torch.argmax returns the first maximal index)."""
    return scores.argmax(dim=1)
