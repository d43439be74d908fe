"""User-facing errors: one line that says what is wrong and how to fix it.

The CLI prints ``StvError`` messages as a single line and exits with code 2; anything
else is a bug and keeps its traceback.
"""


class StvError(Exception):
    """A user mistake or an unmet precondition, with a message naming the fix."""


class ArtifactError(StvError):
    """An artifact is missing, corrupt, foreign, or made for another model."""


class DataError(StvError):
    """A data source cannot be read or does not fit the task."""


class ModelError(StvError):
    """A model cannot be loaded or its architecture cannot be resolved."""
