"""Caption metrics: the wrapper gives what pycocoevalcap gives when called directly, on a hand-made corpus (Java runs
the PTB tokenizer and METEOR: skipped without `java` on PATH)."""

from __future__ import annotations

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from vltk.errors import VltkError
from vltk.metrics.captions import caption_metrics

from tests.helpers import needs_java

pytestmark = needs_java

GROUND_TRUTH = {
    "a": ["A red circle above a blue square.", "a blue square below a red circle"],
    "b": ["a small green triangle", "there is a small green triangle in the top left"],
    "c": ["two large purple squares", "a large purple square next to another"],
}
CANDIDATES = {"a": "a red circle above a square", "b": "a small green triangle", "c": "a yellow circle"}


@pytest.mark.slow  # METEOR's Java process takes seconds to start
def test_parity_with_pycocoevalcap_called_directly():
    ours = caption_metrics(GROUND_TRUTH, CANDIDATES)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in GROUND_TRUTH.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in CANDIDATES.items()})
    bleu = Bleu(4).compute_score(gts, res)[0]
    assert [ours[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-4)
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-4)
    assert ours["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-4)
    assert ours["METEOR"] == pytest.approx(Meteor().compute_score(gts, res)[0], abs=1e-4)
    assert ours["SPICE"] is None  # not asked for: it needs CoreNLP jars that cannot be fetched offline


def test_a_perfect_caption_scores_higher_and_errors_are_clear():
    perfect = caption_metrics(GROUND_TRUTH, {k: v[0] for k, v in GROUND_TRUTH.items()}, meteor=False)
    assert perfect["BLEU-1"] > caption_metrics(GROUND_TRUTH, CANDIDATES, meteor=False)["BLEU-1"]
    with pytest.raises(VltkError, match="no references"):
        caption_metrics(GROUND_TRUTH, {"z": "a red circle"}, meteor=False)
    with pytest.raises(VltkError, match="no captions"):
        caption_metrics(GROUND_TRUTH, {}, meteor=False)
