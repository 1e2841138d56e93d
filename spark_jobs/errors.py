"""Errors that the command line reports as a message and exit status 2, without a traceback.

Each message names what failed (file, column, option or stage), the value and
what to do next.
"""


class PipelineError(Exception):
    """Base for errors caused by input or usage rather than by a bug."""


class ParameterError(PipelineError, ValueError):
    """An option value outside its allowed range."""


class InputDataError(PipelineError, ValueError):
    """Input data that is missing, empty, of an unknown layout or too damaged to use."""


class UncommittedInputError(PipelineError, RuntimeError):
    """An input has no committed manifest: the stage that writes it died or never ran."""


class LineageError(PipelineError, RuntimeError):
    """Inputs descend from different datasets or runs."""
