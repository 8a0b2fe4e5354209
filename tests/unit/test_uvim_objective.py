"""UViM's stage-II targets draw their posterior noise as GIVT's training does: keyed by (seed, step) and the samples'
places in the global batch, so one process and two (or one micro-batch and two) give each sample the same z; and the
dense loader's stream positions are those places."""

import torch

from vltk.labeltok.config import LabelTokenizerConfig
from vltk.labeltok.model import LabelAutoencoder
from vltk.objectives.common import Draws, batch_offsets
from vltk.objectives.uvim import label_tokens


def tiny_vae() -> LabelAutoencoder:
    torch.manual_seed(0)
    cfg = LabelTokenizerConfig(task="panoptic", image_size=16, patch_size=4, width=16, enc_depth=1, dec_depth=1,
                               heads=2, mlp_width=32, code_len=4, codeword_dim=3, num_classes=5, max_instances=6)
    return LabelAutoencoder(cfg).eval()


def test_a_split_batch_draws_what_the_whole_one_does():
    model, step, batch = tiny_vae(), 3, 4
    labels = torch.randint(0, 5, (batch, 16, 16, 2))
    index = torch.arange(step * batch, (step + 1) * batch)  # the stream positions of global batch 3

    def targets(rows: slice) -> torch.Tensor:
        draws = Draws(7, step, batch, batch_offsets(index[rows], step, batch), "cpu")
        return label_tokens(model, labels[rows], draws)

    whole = targets(slice(0, 4))
    assert torch.equal(torch.cat([targets(slice(0, 2)), targets(slice(2, 4))]), whole)  # two ranks / micro-batches
    mu, logvar = model.encode(labels)
    assert whole.shape == mu.shape and not torch.allclose(whole, mu)  # a draw around the mean, not the mean
    z = (whole - mu) / (0.5 * logvar).exp()  # the noise itself: N(0, 1), other for another step
    other = label_tokens(model, labels, Draws(7, step + 1, batch, torch.arange(batch), "cpu"))
    assert 0.3 < z.std() < 3 and not torch.allclose(other, whole)
    assert torch.equal(label_tokens(model, labels, None), mu)
