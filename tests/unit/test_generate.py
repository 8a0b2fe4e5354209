"""The generation core's checks, which the sample stage and the Python API share."""

import numpy as np
import pytest
import torch

from vltk.errors import VltkError
from vltk.sampling.generate import (
    TASKS, GenerateConfig, bracket_spans, bracketed, central_span, check_task, split_brackets,
)
from vltk.sampling.magvlt import MAGVLTSampling
from vltk.text.bpe import BPETokenizer

CAPTIONS = {"text_tokens": 16, "num_classes": 0}  # a text-conditioned GIVT's model config (what matters of it)
CLASSES = {"text_tokens": 0, "num_classes": 10}


def test_every_generator_does_the_tasks_of_its_paper_and_no_other():
    assert set(TASKS["magvlt"]) == {"t2i", "i2t", "it2it", "inpaint", "infill", "joint"}  # MAGVLT §3, Table 1-4
    check_task("argvlt", "inpaint", {})
    with pytest.raises(VltkError, match="argvlt cannot do infill"):
        check_task("argvlt", "infill", {})


@pytest.mark.parametrize("kind", ["givt-causal", "givt-maskgit"])
def test_a_givt_only_does_the_condition_it_was_trained_on(kind):
    check_task(kind, "t2i", CAPTIONS)
    check_task(kind, "class", CLASSES)
    with pytest.raises(VltkError, match="not trained on captions"):
        check_task(kind, "t2i", CLASSES)
    with pytest.raises(VltkError, match="not trained on class labels"):
        check_task(kind, "class", CAPTIONS)


def test_unconditional_pairs_cannot_be_guided():
    with pytest.raises(ValueError, match="unconditional"):
        GenerateConfig(task="it2it", magvlt=MAGVLTSampling(guidance=1.0))
    with pytest.raises(ValueError, match="batch_size"):
        GenerateConfig(batch_size=0)


def test_joint_is_magvlts_alone_and_unguided():
    check_task("magvlt", "joint", {})
    for kind in ("argvlt", "givt-causal", "givt-maskgit"):
        with pytest.raises(VltkError, match=f"{kind} cannot do joint"):
            check_task(kind, "joint", CAPTIONS)
    with pytest.raises(ValueError, match="joint decodes both modalities"):
        GenerateConfig(task="joint", magvlt=MAGVLTSampling(guidance=1.0))


# ---- joint's [bracketed] spans ----

def hand_tokenizer() -> BPETokenizer:
    """Bytes and two merges: "red" is one token; every other word one token per character ("a" is one)."""
    return BPETokenizer([("r", "e"), ("re", "d</w>")], context_length=12)


@pytest.mark.parametrize("caption,parts", [
    ("a small [red circle] above", [("a small ", False), ("red circle", True), (" above", False)]),
    ("[red] circle", [("red", True), (" circle", False)]),
    ("a [red] and a [blue]", [("a ", False), ("red", True), (" and a ", False), ("blue", True)]),
    ("a red circle", [("a red circle", False)]),
])
def test_split_brackets_hand_cases(caption, parts):
    assert split_brackets(caption) == parts


@pytest.mark.parametrize("caption,why", [("a [] circle", "encloses no words"), ("a [ ] circle", "encloses no words"),
                                         ("a [red circle", "unbalanced"), ("a red] circle", "unbalanced"),
                                         ("a [[red]] circle", "nested")])
def test_split_brackets_refuses_bad_pairs(caption, why):
    with pytest.raises(ValueError, match=why):
        split_brackets(caption)


def test_bracket_spans_mark_the_bracketed_tokens_and_keep_their_count():
    tok = hand_tokenizer()
    (row, span), (row2, span2) = bracket_spans(tok, ["a [red] ox", "[A ox] red"])
    eos = tok.eos_id
    # a | red | o x : the span is the one token of "red"; the row is the caption without brackets, EOS-padded.
    assert row.tolist() == tok.encode_batch(["a red ox"])[0].tolist() and row[4:].tolist() == [eos] * 8
    assert span.tolist() == [False, True, False, False] + [False] * 8
    assert span2.tolist() == [True, True, True, False] + [False] * 8  # "a ox": a | o x, three tokens
    assert bracketed(tok, row, span) == "a [red] ox" and bracketed(tok, row2, span2) == "[a ox] red"
    # A span that ends inside a word (the infilling span counts tokens, not words) is shown without a space.
    assert bracketed(tok, row, np.arange(12) == 2) == "a red [o]x"


@pytest.mark.parametrize("captions,message", [
    (["a [red] ox", "a red ox"], r"prompt 2 of 2 \('a red ox'\) has no \[bracketed\] words"),
    (["a [re]d ox"], "brackets must enclose whole words"),
    (["a [red ox"], r"prompt 1 of 1 \('a \[red ox'\): its brackets are unbalanced"),
    (["[a red ox] ox ox ox ox ox"], "has 14 tokens; the generator reads 12"),
])
def test_bracket_spans_errors_are_one_line(captions, message):
    with pytest.raises(VltkError, match=message):
        bracket_spans(hand_tokenizer(), captions)


def test_central_span_is_infillings():
    # n_txt 7: 6 tokens before the EOS -> floor(6 / 2) = 3 from 3 - 1 = 2; n_txt 4: 3 tokens -> 1 from 1.
    span = central_span(torch.tensor([7, 4]), 8)
    assert span.int().tolist() == [[0, 0, 1, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]]
