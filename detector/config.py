"""Configuration of a detector: one flat pydantic shape, a class per kind, chosen by ``kind``.

A config is all that is needed to rebuild a detector; it is stored as ``config.json`` next to
the weights, in one flat JSON shape (``{"kind": "vae", "window": 64, "beta": 2, "training":
{...}}``). Its fields have two owners:

- the detector (:class:`DetectorConfig`: window, preprocessing, scoring, ``training``,
  ``calibration``), the same for every kind;
- the kind (``hidden_dims``, ``latent_dim``, ``dropout`` and the kind's own options), defined
  next to its model in :mod:`detector.models` (``AEConfig`` in ``models/ae.py``, ...). The model
  receives only these (:attr:`DetectorConfig.network`).

Each kind's config class combines the two (:data:`KIND_CONFIGS`). ``DetectorConfig(...)``,
``DetectorConfig.model_validate(...)`` and a field typed ``DetectorConfig`` in another pydantic
model all pick the class by ``kind`` (default ``"ae"``): ``DetectorConfig(kind="vae", beta=2)``
is a :class:`VAEDetectorConfig`, and an option of another kind (``{"kind": "ae", "beta": 5}``)
is a validation error that names the field and the kinds that take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from .models import (
    REGISTRY,
    AAEConfig,
    AEConfig,
    CVAEConfig,
    NetworkConfig,
    SSAAEConfig,
    VAEConfig,
)

__all__ = [
    "KINDS",
    "KIND_CONFIGS",
    "AAEDetectorConfig",
    "AEDetectorConfig",
    "CVAEDetectorConfig",
    "CalibrationConfig",
    "DetectorConfig",
    "SSAAEDetectorConfig",
    "TrainingConfig",
    "VAEDetectorConfig",
    "stored_config",
]

#: The kind names, in the order of :data:`detector.models.REGISTRY`.
KINDS: tuple[str, ...] = tuple(REGISTRY)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingConfig(_Strict):
    """How the network is trained.

    The validation split is ``validation_fraction`` of the training data, in time order, laid
    out by ``holdout``; it drives early stopping and, as held-out normal data, the error scales
    and threshold calibration.
    """

    max_epochs: int = Field(40, ge=1, le=10_000, description="Cap on training epochs.")
    max_seconds: float | None = Field(
        300.0,
        gt=0,
        description="Cap on training wall time in seconds (None: no cap). A safety net for "
        "pathological fits: a cap that ordinary fits reach makes the model depend on how busy "
        "the machine is, so epochs and early stopping should end training first.",
    )
    batch_size: int = Field(
        64,
        ge=1,
        le=65_536,
        description="Windows per optimisation step. Overlapping windows make the gradient of "
        "a few dozen nearly as good as that of hundreds, so small batches buy the most steps "
        "for the compute.",
    )
    learning_rate: float = Field(1e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0)
    validation_fraction: float = Field(0.2, gt=0, lt=0.9)
    holdout: Literal["tail", "blocks"] = Field(
        "tail",
        description="Where the validation split lies in each segment. 'tail': its last "
        "validation_fraction (data given as normal, scored later). 'blocks': blocks of ten "
        "windows or more spread evenly over the segment, the last one at its end, "
        "validation_fraction in all, so the calibration sees the whole span rather than its "
        "latest stretch (retraining on stream history, detector.retraining, sets it).",
    )
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
    epoch_windows: int | None = Field(
        1024,
        ge=1,
        description="Training windows per epoch: each epoch draws this many of the training "
        "windows at random (seeded, without repeats within the epoch), a fresh draw every "
        "epoch (windows labelled anomalous, which only a kind that learns from labels keeps, "
        "are in every epoch); None (or at least as many as there are) uses every window "
        "every epoch. "
        "Stride-1 windows overlap almost entirely, so an epoch of all of them repeats the "
        "same data and its cost grows with the series, not with what there is to learn.",
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


# What the validators below accept, said in the JSON schema too (their messages stay theirs).
_Window = Annotated[int, WithJsonSchema({"type": "integer", "minimum": 2, "maximum": 4096})]
_Share = Annotated[float, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]
_Features = Annotated[
    list[str],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "uniqueItems": True,
        }
    ),
]


def _kind_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """A kind's JSON schema names its ``kind``: only the default kind may leave it out, so a
    config without one matches the default kind's schema alone, as validation reads it."""
    if cls.model_fields["kind"].default != DetectorConfig.model_fields["kind"].default:
        schema["required"] = [*schema.get("required", []), "kind"]
    if "condition_on" in cls.model_fields:  # a 'key' condition needs the key column
        schema["if"] = {
            "properties": {"condition_on": {"contains": {"const": "key"}}},
            "required": ["condition_on"],
        }
        schema["then"] = {
            "required": ["key_column"],
            "properties": {"key_column": {"type": "string"}},
        }


def _kind_training_defaults() -> str:
    """The kinds' own training defaults, for the ``training`` field's description."""
    own = {k: m.config_class.training_defaults for k, m in REGISTRY.items()}
    parts = [
        f"{kind}: " + ", ".join(f"{name} {value:g}" for name, value in fields.items())
        for kind, fields in own.items()
        if fields
    ]
    return "; ".join(parts) or "none at present"


class DetectorConfig(_Strict):
    """Everything needed to build (and rebuild) a detector: its own options and its kind's.

    Constructing or validating ``DetectorConfig`` gives the class of the ``kind`` asked for
    (see the module docstring); this class holds the options every kind shares.

    Parameters
    ----------
    kind
        ``"ae"`` plain autoencoder, ``"vae"`` variational, ``"aae"`` adversarial, ``"cvae"``
        conditional variational, ``"ssaae"`` semi-supervised adversarial (learns from labels
        given to ``fit``) (:data:`detector.models.REGISTRY`). Denoising is a training
        option of every kind (``training.noise_std`` / ``training.mask_probability``).
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

    # the kinds' classes are defined below
    model_config = ConfigDict(defer_build=True, json_schema_extra=_kind_schema)

    format_version: int = 1
    kind: str = "ae"
    window: _Window | Literal["auto"] = "auto"
    stride: int = Field(1, ge=1)
    features: _Features | None = None
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
    window_weight: _Share | Literal["auto"] = Field(
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
    key_column: str | None = Field(
        None,
        description="Column naming the series each row belongs to; windows never cross series.",
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig,
        validate_default=True,
        description="How the network is trained. A kind may set its own defaults for some "
        f"fields, which the fields given here override ({_kind_training_defaults()}).",
    )
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @field_validator("training", mode="before")
    @classmethod
    def _apply_kind_training_defaults(cls, v: Any) -> Any:
        """The kind's own training defaults (``training_defaults`` of its network config) fill
        the fields that ``v`` does not set."""
        own: Mapping[str, Any] = getattr(cls, "training_defaults", {})
        if not own:
            return v
        if isinstance(v, TrainingConfig):
            v = v.model_dump(exclude_unset=True)
        return {**own, **v} if isinstance(v, Mapping) else v

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

    @field_validator("features")
    @classmethod
    def _check_features(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v) or not all(v)):
            raise ValueError(
                "features must be a non-empty list of distinct, non-empty column names"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _refuse_other_kinds_options(cls, data: Any) -> Any:
        """An option of another kind is refused by name, with the kinds that take it."""
        if not isinstance(data, Mapping):
            return data
        errors: list[Any] = []
        for name in data:
            takers = [k for k, c in KIND_CONFIGS.items() if name in c.model_fields]
            if name not in cls.model_fields and takers:
                message = "{field} is not an option of kind {kind}; it is an option of {takers}"
                ctx = {"field": name, "kind": data.get("kind", "ae"), "takers": ", ".join(takers)}
                errors.append(
                    {
                        "type": PydanticCustomError("option_of_other_kind", message, ctx),
                        "loc": (name,),
                        "input": data[name],
                    }
                )
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    @model_validator(mode="after")
    def _check_across_owners(self) -> DetectorConfig:
        if self.features is not None and self.key_column in self.features:
            raise ValueError("key_column cannot also be a feature")
        self.network.check_detector_options(self.key_column)
        return self

    @property
    def network(self) -> NetworkConfig:
        """The kind's own config (:mod:`detector.models`): all that the model receives."""
        own = REGISTRY[self.kind].config_class
        return own.model_validate({name: getattr(self, name) for name in own.model_fields})

    def __new__(cls, *args: Any, **data: Any) -> DetectorConfig:
        # DetectorConfig(kind=...) builds the kind's class; an unknown kind stays here and
        # fails validation with a clear message
        kind = data.get("kind", "ae")
        if cls is DetectorConfig and isinstance(kind, str) and kind in KIND_CONFIGS:
            cls = KIND_CONFIGS[kind]
        return super().__new__(cls)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        if source is not DetectorConfig:
            return handler(source)
        # validation picks the kind's class itself (errors keep the field's own location);
        # the tagged union gives the JSON schema and serialises each kind with its own fields
        union = core_schema.tagged_union_schema(
            {kind: handler.generate_schema(c) for kind, c in KIND_CONFIGS.items()},
            discriminator="kind",
        )
        return core_schema.no_info_wrap_validator_function(_validate_any_kind, union)


def _validate_any_kind(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    """Validate ``value`` as the config class of its ``kind`` (``"ae"`` when absent)."""
    if isinstance(value, DetectorConfig):
        return value
    if not isinstance(value, Mapping):
        return handler(value)  # the union's own type error
    kind = value.get("kind", "ae")
    if not isinstance(kind, str) or kind not in KIND_CONFIGS:
        message = "unknown kind {kind}; choose one of {kinds}"
        ctx = {"kind": repr(kind), "kinds": ", ".join(KIND_CONFIGS)}
        error: Any = {
            "type": PydanticCustomError("unknown_kind", message, ctx),
            "loc": ("kind",),
            "input": kind,
        }
        raise ValidationError.from_exception_data("DetectorConfig", [error])
    return KIND_CONFIGS[kind].model_validate(value)


class AEDetectorConfig(AEConfig, DetectorConfig):
    """An ``ae`` detector's config: :class:`DetectorConfig` and
    :class:`~detector.models.ae.AEConfig`."""


class VAEDetectorConfig(VAEConfig, DetectorConfig):
    """A ``vae`` detector's config: :class:`DetectorConfig` and
    :class:`~detector.models.vae.VAEConfig`."""


class AAEDetectorConfig(AAEConfig, DetectorConfig):
    """An ``aae`` detector's config: :class:`DetectorConfig` and
    :class:`~detector.models.aae.AAEConfig`."""


class CVAEDetectorConfig(CVAEConfig, DetectorConfig):
    """A ``cvae`` detector's config: :class:`DetectorConfig` and
    :class:`~detector.models.cvae.CVAEConfig`."""


class SSAAEDetectorConfig(SSAAEConfig, DetectorConfig):
    """An ``ssaae`` detector's config: :class:`DetectorConfig` and
    :class:`~detector.models.ssaae.SSAAEConfig`."""


#: Each kind's config class by kind name: every kind of :data:`detector.models.REGISTRY`.
KIND_CONFIGS: dict[str, type[DetectorConfig]] = {
    c.model_fields["kind"].default: c
    for c in (
        AEDetectorConfig,
        VAEDetectorConfig,
        AAEDetectorConfig,
        CVAEDetectorConfig,
        SSAAEDetectorConfig,
    )
}


def stored_config(data: Any) -> DetectorConfig:
    """Validate a config stored by this or an earlier version of ReconAD (a saved model's
    ``config.json``, a config the service keeps).

    Earlier versions had one class for every kind and wrote every kind's options into every
    config, where the other kinds ignored them: those options are dropped here, since they
    never had an effect. Everything else is validated as :class:`DetectorConfig` validates new
    input.

    Raises
    ------
    pydantic.ValidationError
    """
    kind = data.get("kind", "ae") if isinstance(data, Mapping) else None
    own = KIND_CONFIGS.get(kind) if isinstance(kind, str) else None
    if own is None:
        return DetectorConfig.model_validate(data)  # its own errors: unknown kind, wrong type
    others = {name for c in KIND_CONFIGS.values() for name in c.model_fields}
    kept = {k: v for k, v in data.items() if k in own.model_fields or k not in others}
    return own.model_validate(kept)
