"""Conditional VAE: encoder and decoder both receive a condition vector.

The condition of a window is the condition of its last point: calendar context from a
timestamp index (hour of day and day of week, each as sine and cosine) and/or a one-hot code of
the series key column, so one model serves several related series or seasonal regimes.
"""

from __future__ import annotations

from .vae import VariationalAutoEncoder

__all__ = ["ConditionalVAE"]


class ConditionalVAE(VariationalAutoEncoder):
    """The VAE of :mod:`detector.models.vae` with conditions concatenated to both halves."""

    kind = "cvae"
    conditional = True
