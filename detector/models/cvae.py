"""Conditional VAE: encoder and decoder both receive a condition vector.

The condition of a window is the condition of its last point: calendar context from a
timestamp index (hour of day and day of week, each as sine and cosine), the phase within the
training data's dominant period (integer indexes), and/or a one-hot code of the series key
column, so one model serves several related series or seasonal regimes. The kind owns that
encoding (:class:`ConditionEncoder`); the preprocessor only asks it for the vectors of each
segment it cuts.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from ..errors import InputError
from ..windows import dominant_period
from .base import NetworkConfig
from .vae import VariationalAutoEncoder, VariationalConfig

__all__ = ["CVAEConfig", "ConditionEncoder", "ConditionalVAE", "hour_fraction"]

Condition = Literal["auto", "hour", "dayofweek", "phase", "key"]


class CVAEConfig(VariationalConfig):
    """The conditional VAE's options: the VAE's plus what to condition on."""

    kind: Literal["cvae"] = "cvae"
    condition_on: list[Condition] = Field(
        default_factory=lambda: ["auto"],  # type: ignore[arg-type]
        description="cvae: 'hour' and 'dayofweek' (calendar context of a timestamp index), "
        "'phase' (position within the training data's dominant period, for integer indexes), "
        "'key' (one-hot of the key column); 'auto' is hour + dayofweek with a timestamp index "
        "and phase otherwise.",
        json_schema_extra={"minItems": 1},
    )

    @field_validator("condition_on")
    @classmethod
    def _check_conditions(cls, v: list[Condition]) -> list[Condition]:
        if not v:
            raise ValueError("cvae needs at least one condition in condition_on")
        return v

    def check_detector_options(self, key_column: str | None) -> None:
        if "key" in self.condition_on and key_column is None:
            raise ValueError("condition_on contains 'key': set key_column to the series-key column")


class ConditionEncoder:
    """Condition vectors of the cvae, fitted on training data.

    Fitted state: ``conditions_`` (the conditions with ``auto`` resolved), ``index_kind_``,
    ``step_``, ``key_levels_`` and ``period_`` (dominant period in points, for ``phase``).
    """

    def __init__(self, config: CVAEConfig) -> None:
        self.config = config

    def fit(self, index_kind: str, step: int, key_levels: list[str], scaled: np.ndarray) -> None:
        """Resolve ``auto`` for the index kind and find the period ``phase`` needs.

        ``scaled`` (T, F) is the training data standardised, missing cells at the mean (0).
        """
        self.index_kind_, self.step_, self.key_levels_ = index_kind, step, list(key_levels)
        out: list[str] = []
        for name in self.config.condition_on:
            if name == "auto":
                auto = ["hour", "dayofweek"] if index_kind == "datetime" else ["phase"]
                out += [a for a in auto if a not in out]
            elif name not in out:
                out.append(name)
        self.conditions_ = out
        self.period_ = 0
        if "phase" in out:
            self.period_ = dominant_period(scaled) or 0

    @property
    def n_conditions(self) -> int:
        """Length of the condition vector: two per periodic condition, one per key level."""
        n = 2 * len({"hour", "dayofweek", "phase"} & set(self.conditions_))
        if "key" in self.conditions_:
            n += len(self.key_levels_)
        return n

    def encode(self, stamps: np.ndarray, key: str, tz: Any) -> np.ndarray:
        """Condition vectors per point, shape (T, C): calendar or phase sin/cos, a key one-hot.

        Parameters
        ----------
        stamps : ndarray, shape (T,)
            Index numbers of the points (nanoseconds for timestamps).
        key : str
            The series the points belong to.
        tz
            Time zone of the caller's timestamps (None when naive).
        """
        parts: list[np.ndarray] = []
        if "phase" in self.conditions_:
            phase = (
                (stamps / self.step_) % self.period_ / self.period_ if self.period_ else 0 * stamps
            )
            parts += [np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)]
        wants_calendar = {"hour", "dayofweek"} & set(self.conditions_)
        if wants_calendar:
            if self.index_kind_ != "datetime":
                raise InputError(
                    "calendar conditions (hour, dayofweek) need a timestamp index; index the "
                    "data by timestamps or set condition_on to ['phase'] or ['key']"
                )
            times = pd.DatetimeIndex(pd.to_datetime(stamps.astype(np.int64), utc=tz is not None))
            if tz is not None:
                times = times.tz_convert(tz)
            if "hour" in self.conditions_:
                hour = hour_fraction(times)
                parts += [np.sin(2 * np.pi * hour), np.cos(2 * np.pi * hour)]
            if "dayofweek" in self.conditions_:
                day = (times.day_of_week.to_numpy() + hour_fraction(times)) / 7.0
                parts += [np.sin(2 * np.pi * day), np.cos(2 * np.pi * day)]
        columns = [p[:, None] for p in parts]
        if "key" in self.conditions_:
            if key not in self.key_levels_:
                raise InputError(
                    f"series key {key!r} was not seen in training; known keys: "
                    f"{self.key_levels_[:20]}; retrain the model to include it"
                )
            onehot = np.zeros((len(stamps), len(self.key_levels_)))
            onehot[:, self.key_levels_.index(key)] = 1.0
            columns.append(onehot)
        return np.concatenate(columns, axis=1).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe fitted state."""
        return {
            "conditions": self.conditions_,
            "index_kind": self.index_kind_,
            "step": self.step_,
            "key_levels": self.key_levels_,
            "period": self.period_,
        }

    @classmethod
    def from_state_dict(cls, config: CVAEConfig, state: dict[str, Any]) -> ConditionEncoder:
        """Rebuild a fitted encoder from :meth:`state_dict` output (``KeyError`` when a key is
        missing, ``ValueError``/``TypeError`` for a wrong type)."""
        encoder = cls(config)
        encoder.conditions_ = [str(c) for c in state["conditions"]]
        encoder.index_kind_ = str(state["index_kind"])
        encoder.step_ = int(state["step"])
        encoder.key_levels_ = [str(k) for k in state["key_levels"]]
        encoder.period_ = int(state["period"])
        return encoder


class ConditionalVAE(VariationalAutoEncoder):
    """The VAE of :mod:`detector.models.vae` with conditions concatenated to both halves."""

    kind = "cvae"
    config_class: ClassVar[type[NetworkConfig]] = CVAEConfig
    conditional = True

    @classmethod
    def conditions(
        cls, config: NetworkConfig, state: dict[str, Any] | None = None
    ) -> ConditionEncoder:
        assert isinstance(config, CVAEConfig)
        if state is None:
            return ConditionEncoder(config)
        return ConditionEncoder.from_state_dict(config, state)


def hour_fraction(times: pd.DatetimeIndex) -> np.ndarray:
    """Fraction of the day elapsed at each timestamp, in [0, 1)."""
    return np.asarray((times.hour * 60 + times.minute) / 1440.0, dtype=np.float64)
