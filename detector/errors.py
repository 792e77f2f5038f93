"""Exceptions raised by the detector library.

Every error a caller can fix is a subclass of :class:`ReconADError`; the message says what to fix.
The service maps these classes to HTTP status codes in one place.

Exception tree::

    ReconADError
    ├── ConfigError                  invalid detector / calibration configuration
    ├── InputError                   data that cannot be used as given
    │   ├── TooShortError            fewer points than a window (or the split) needs
    │   ├── ColumnsError             missing, extra or renamed feature columns
    │   ├── NonNumericError          a feature column that is not numeric
    │   ├── NonFiniteError           +/-inf in the data
    │   ├── MissingValuesError       forbidden NaN, or a feature never observed
    │   └── LabelsError              labels that do not match the scores they belong to
    ├── NotFittedError               scoring before ``fit``
    ├── TrainingError                training diverged or was cancelled
    │   └── TrainingCancelled        a progress callback asked training to stop
    └── PersistenceError             a model directory that is missing, incomplete or corrupt
"""

from __future__ import annotations

__all__ = [
    "ColumnsError",
    "ConfigError",
    "InputError",
    "LabelsError",
    "MissingValuesError",
    "NonFiniteError",
    "NonNumericError",
    "NotFittedError",
    "PersistenceError",
    "ReconADError",
    "TooShortError",
    "TrainingCancelled",
    "TrainingError",
]


class ReconADError(Exception):
    """Base class of every error raised by ReconAD's detector library."""


class ConfigError(ReconADError, ValueError):
    """A configuration value is invalid or inconsistent."""


class InputError(ReconADError, ValueError):
    """Input data cannot be used as given."""


class TooShortError(InputError):
    """The input has fewer points than the window (or the validation split) needs."""


class ColumnsError(InputError):
    """Feature columns are missing, unexpected or differ from those the model was fitted on."""


class NonNumericError(InputError):
    """A feature column holds non-numeric values."""


class NonFiniteError(InputError):
    """The input holds +inf or -inf."""


class MissingValuesError(InputError):
    """Missing values where the policy forbids them, or a feature with no observed value."""


class LabelsError(InputError):
    """Labels do not match the scores or series they are meant to describe."""


class NotFittedError(ReconADError, RuntimeError):
    """A scoring method was called before ``fit``."""


class TrainingError(ReconADError, RuntimeError):
    """Training failed (for example the loss became non-finite)."""


class TrainingCancelled(TrainingError):  # noqa: N818 (a public name of the contract)
    """Training was stopped because the progress callback asked for it."""


class PersistenceError(ReconADError, OSError):
    """A saved model is missing, incomplete, corrupt or of an unknown format version."""
