"""The one exception type the CLI turns into a single red line and a non-zero exit.

Anything a user can cause (a missing file, a config typo, the wrong artifact kind) raises `VltkError` with a message
that names the culprit; everything else is a bug and keeps its traceback.
"""


class VltkError(Exception):
    """A user-facing error: printed as one line, exit code 2."""
