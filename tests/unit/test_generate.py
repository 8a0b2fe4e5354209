"""The generation core's checks, which the sample stage and the Python API share."""

import pytest

from vltk.errors import VltkError
from vltk.sampling.generate import TASKS, GenerateConfig, check_task
from vltk.sampling.magvlt import MAGVLTSampling

CAPTIONS = {"text_tokens": 16, "num_classes": 0}  # a text-conditioned GIVT's model config (what matters of it)
CLASSES = {"text_tokens": 0, "num_classes": 10}


def test_every_generator_does_the_tasks_of_its_paper_and_no_other():
    assert set(TASKS["magvlt"]) == {"t2i", "i2t", "it2it", "inpaint", "infill"}  # MAGVLT §3, Table 1-4
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
