"""Settings for the whole test suite.

The weights files the tests load (Inception, VGG16, ...) are random-init stand-ins shaped like the releases, which no
published SHA-256 matches: VLTK_SKIP_WEIGHT_HASH=1 turns that check off (vltk.weights). It is set here, at import, so
that the stages' subprocesses inherit it; tests/unit/test_weights.py unsets it to test the check itself.
"""

import os

os.environ["VLTK_SKIP_WEIGHT_HASH"] = "1"
