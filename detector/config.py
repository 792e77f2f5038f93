"""Configuration of a detector: one pydantic model, validated on construction.

A :class:`DetectorConfig` is all that is needed to rebuild a detector's network; it is stored as
``config.json`` next to the weights. Fields that apply to one kind only say so and are ignored by
the others.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "KINDS",
    "CalibrationConfig",
    "DetectorConfig",
    "Kind",
    "TrainingConfig",
]

Kind = Literal["ae", "vae", "aae", "cvae"]
KINDS: tuple[str, ...] = ("ae", "vae", "aae", "cvae")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingConfig(_Strict):
    """How the network is trained.

    The validation split is the last ``validation_fraction`` of the training data, in time order;
    it drives early stopping and, as held-out normal data, threshold calibration.
    """

    max_epochs: int = Field(40, ge=1, le=10_000, description="Cap on training epochs.")
    max_seconds: float | None = Field(
        300.0,
        gt=0,
        description="Cap on training wall time in seconds (None: no cap). A safety net for "
        "pathological fits: a cap that ordinary fits reach makes the model depend on how busy "
        "the machine is, so epochs and early stopping should end training first.",
    )
    batch_size: int = Field(256, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0)
    validation_fraction: float = Field(0.2, gt=0, lt=0.9)
    patience: int = Field(
        5, ge=1, description="Epochs without validation improvement before stopping."
    )
    min_delta: float = Field(1e-4, ge=0, description="Relative improvement that resets patience.")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' picks CUDA when available, else CPU."
    )
    noise_std: float = Field(
        0.0,
        ge=0,
        description="Denoising: std of Gaussian noise added to (scaled) inputs at fit time; "
        "the target stays clean. 0 disables it.",
    )
    mask_probability: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Denoising: probability of zeroing an input cell at fit time (clean target).",
    )
    max_train_windows: int | None = Field(
        200_000, ge=1, description="Subsample training windows (evenly spaced) above this count."
    )

    @property
    def denoising(self) -> bool:
        return self.noise_std > 0 or self.mask_probability > 0


class CalibrationConfig(_Strict):
    """How the anomaly threshold is chosen from held-out normal scores.

    Methods:
    - ``quantile``: the ``1 - fpr`` quantile of the held-out scores (target false-positive rate).
    - ``mad``: ``median + k * 1.4826 * MAD`` of the held-out scores.
    - ``pot``: Peaks-Over-Threshold (SPOT initialisation, Siffer et al. KDD 2017): a generalised
      Pareto tail fitted above the ``init_level`` quantile, threshold at exceedance
      probability ``risk``.
    - ``best_f1``: the threshold maximising F1 against labels the caller supplies.
    """

    method: Literal["quantile", "mad", "pot", "best_f1"] = "pot"
    fpr: float = Field(0.005, gt=0, lt=1, description="quantile: target false-positive rate.")
    k: float = Field(5.0, gt=0, description="mad: number of scaled MADs above the median.")
    risk: float = Field(1e-3, gt=0, lt=1, description="pot: tail probability of the threshold.")
    init_level: float = Field(
        0.98, gt=0.5, lt=1, description="pot: quantile where the tail starts."
    )


class DetectorConfig(_Strict):
    """Everything needed to build (and rebuild) a detector.

    Parameters
    ----------
    kind
        ``"ae"`` plain autoencoder, ``"vae"`` variational, ``"aae"`` adversarial, ``"cvae"``
        conditional variational. Denoising is a training option of every kind
        (``training.noise_std`` / ``training.mask_probability``).
    window
        Window length in points, or ``"auto"``: the longest window the rules allow (256 points,
        at most 2,048 values, and what the validation split can hold; see
        :func:`~detector.windows.resolve_window`).
    stride
        Step between consecutive training windows. Scoring always uses every window (stride 1)
        so that each point is covered by every window that contains it.
    features
        Feature columns to use, in order; ``None`` uses every numeric column (after removing
        ``key_column``).
    """

    format_version: int = 1
    kind: Kind = "ae"
    window: int | Literal["auto"] = "auto"
    stride: int = Field(1, ge=1)
    features: list[str] | None = None
    hidden_dims: list[int] = Field(default_factory=lambda: [128, 64])
    latent_dim: int = Field(16, ge=1, le=4096)
    dropout: float = Field(0.0, ge=0, lt=1)
    missing: Literal["interpolate", "error"] = Field(
        "interpolate",
        description="'interpolate': fill NaN and timestamp gaps by linear interpolation for the "
        "network input and leave the filled cells out of the score; 'error': refuse NaN.",
    )
    timestamp_order: Literal["sort", "error"] = Field(
        "sort",
        description="A timestamp smaller than the one before it: 'sort' puts the rows in time "
        "order (stable; scores still come back in the caller's row order), 'error' refuses "
        "the data. Either way, rows repeating a timestamp with the same values are one point "
        "and share its score; with different values they are consecutive points.",
    )
    score_reduction: Literal["mean", "max"] = Field(
        "mean",
        description="How the per-window errors of a point (one per window covering it) combine.",
    )
    window_weight: float | Literal["auto"] = Field(
        "auto",
        description="Weight of a window's mean error (per feature), shared by every point of the "
        "window, against each point's own error: 1 scores whole windows (anomalies that change "
        "a stretch), 0 single points (short anomalies). 'auto': 1 / the number of continuous "
        "features of the training data.",
    )
    error_normalization: bool = Field(
        True,
        description="Divide each feature's error by its mean error on held-out normal data.",
    )
    error_floor: float = Field(
        1e-3,
        gt=0,
        le=1,
        description="Error normalisation divides no feature's error by less than this fraction "
        "of the mean error over features, so that features predicted almost perfectly on "
        "normal data (constants, rare flags) cannot dominate the score.",
    )
    two_valued_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight in the score of features with at most two distinct values in the "
        "training data (command flags, on/off states), against 1 for every continuous feature. "
        "A flag that rarely flips on normal data has a tiny held-out error, so under error "
        "normalisation any flip, normal ones included, would dominate the score. They stay "
        "network inputs (context) either way. When every feature is two-valued all count fully.",
    )
    new_value_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight in the score of a cell of a two-valued or constant training feature "
        "that holds none of the value(s) the feature had in training: a feature leaving the "
        "only values it ever had is strong evidence, which two_valued_weight alone would hide. "
        "The normal flips between the known values keep two_valued_weight. Default 0 (off): on "
        "the dev folders a value unseen in training is common (on 5 smap and msl channels "
        "over a third of the test points), and 1 was not validated there.",
    )
    smoothing: int = Field(
        0, ge=0, description="Trailing moving-average of point scores over this many points."
    )
    # vae / cvae
    beta: float = Field(1.0, ge=0, description="vae/cvae: weight of the KL term.")
    score_samples: int = Field(
        0,
        ge=0,
        le=256,
        description="vae/cvae: 0 scores with the posterior mean; n > 0 averages n latent samples.",
    )
    # aae
    prior_std: float = Field(1.0, gt=0, description="aae: std of the Gaussian prior.")
    adversarial_weight: float = Field(1.0, ge=0, description="aae: weight of the generator loss.")
    # cvae
    condition_on: list[Literal["auto", "hour", "dayofweek", "phase", "key"]] = Field(
        default_factory=lambda: ["auto"],  # type: ignore[arg-type]
        description="cvae: 'hour' and 'dayofweek' (calendar context of a timestamp index), "
        "'phase' (position within the training data's dominant period, for integer indexes), "
        "'key' (one-hot of the key column); 'auto' is hour + dayofweek with a timestamp index "
        "and phase otherwise.",
    )
    key_column: str | None = Field(
        None,
        description="Column naming the series each row belongs to; windows never cross series.",
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 2 <= v <= 4096:
            raise ValueError("window must be between 2 and 4096 points, or 'auto'")
        return v

    @field_validator("window_weight")
    @classmethod
    def _check_window_weight(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not 0 <= v <= 1:
            raise ValueError("window_weight must be between 0 and 1, or 'auto'")
        return v

    @field_validator("hidden_dims")
    @classmethod
    def _check_hidden(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 or h > 65_536 for h in v):
            raise ValueError("hidden_dims must be a non-empty list of sizes between 1 and 65536")
        return v

    @field_validator("features")
    @classmethod
    def _check_features(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("features must be a non-empty list of distinct column names")
        return v

    @model_validator(mode="after")
    def _check_kind_options(self) -> DetectorConfig:
        if self.kind == "cvae" and not self.condition_on:
            raise ValueError("cvae needs at least one condition in condition_on")
        if self.kind == "cvae" and "key" in self.condition_on and self.key_column is None:
            raise ValueError("condition_on contains 'key': set key_column to the series-key column")
        if self.features is not None and self.key_column in self.features:
            raise ValueError("key_column cannot also be a feature")
        return self
