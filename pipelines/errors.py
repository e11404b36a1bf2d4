"""The error a run raises when it cannot go on (importable without Ray)."""


class PipelineError(Exception):
    """A run that cannot go on; the message says why and what to change."""
