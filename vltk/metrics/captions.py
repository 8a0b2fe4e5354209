"""Caption metrics through pycocoevalcap: PTB tokenisation, BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when the
user has the Stanford CoreNLP jars; it cannot download them offline).

    scores = caption_metrics({"img1": ["a red circle", "a circle that is red"]}, {"img1": "a red circle"})
    scores["CIDEr"], scores["BLEU-4"], scores["SPICE"]          # SPICE: None unless spice=True and it ran

Every candidate is scored against all references of its id, as the COCO caption evaluation does. METEOR and the PTB
tokenizer need Java (`java` on the PATH); METEOR takes ~8 s to start.
"""

from __future__ import annotations

import shutil
from typing import Any

from vltk.errors import VltkError

BLEU = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")


def caption_metrics(references: dict[str, list[str]], candidates: dict[str, str], *, meteor: bool = True,
                    spice: bool = False) -> dict[str, Any]:
    """Corpus-level scores of `candidates` (one caption per id) against `references` (all captions of the id)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    missing = sorted(set(candidates) - set(references))
    if missing:
        raise VltkError(f"{len(missing)} candidate captions have no references (e.g. {missing[0]!r})")
    if not candidates:
        raise VltkError("there are no captions to score")
    if shutil.which("java") is None:
        raise VltkError("caption metrics need Java for the PTB tokenizer and METEOR (e.g. the Debian package "
                        "openjdk-17-jre-headless)")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in references[k]] for k in candidates})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in candidates.items()})
    scores: dict[str, Any] = dict(zip(BLEU, Bleu(4).compute_score(gts, res, verbose=0)[0]))
    scores["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scores["METEOR"] = Meteor().compute_score(gts, res)[0]  # its Java process ends with the object
    else:
        scores["METEOR"] = None
    scores["SPICE"] = _spice(gts, res) if spice else None
    return {k: (round(float(v), 4) if v is not None else None) for k, v in scores.items()}


def _spice(gts: dict, res: dict) -> float:
    """SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use: offline, put the jars in its
    `spice/lib` folder first."""
    from pycocoevalcap.spice.spice import Spice

    try:
        return Spice().compute_score(gts, res)[0]
    except Exception as err:  # its Java subprocess or the download fails: one clear line
        raise VltkError(f"SPICE could not run ({type(err).__name__}: {err}); it needs the Stanford CoreNLP 3.6.0 "
                        "jars in pycocoevalcap's spice/lib folder") from None
