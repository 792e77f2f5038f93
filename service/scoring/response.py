"""The score response: per-point results derived from a model's scores, and their encoding.

:class:`ScoreResponse` is the documented response schema and the object that is encoded: its
array fields hold numpy arrays, which :meth:`ScoreResponse.to_json` writes with orjson's numpy
support (no Python lists of a million floats), or :meth:`ScoreResponse.encode` as an Arrow IPC
stream or Parquet table when the client's ``Accept`` asks for one. :func:`derive` computes the
normalised scores, the flags and the top-k contributing features once for a whole batch, which
the batcher then slices per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, WithJsonSchema

from detector import decision
from service.columnar import JSON, write_table
from service.scoring.cache import LoadedVersion

__all__ = ["Derived", "ScoreResponse", "derive"]


def _nested(items: dict[str, Any], description: str) -> Any:
    """JSON schema of an array nested once (series) or twice (windows) around ``items``."""
    return WithJsonSchema(
        {
            "type": "array",
            "items": {"anyOf": [items, {"type": "array", "items": items}]},
            "description": description,
        }
    )


_NUMBER = {"anyOf": [{"type": "number"}, {"type": "null"}]}
PointFloats = Annotated[np.ndarray, _nested(_NUMBER, "One number per point (null: not scored).")]
PointFlags = Annotated[np.ndarray, _nested({"type": "boolean"}, "One flag per point.")]
TopValues = Annotated[np.ndarray, WithJsonSchema({"type": "array", "items": {}})]
Expected = Annotated[
    np.ndarray | dict[str, np.ndarray],
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {}},
                {"type": "object", "additionalProperties": {"type": "array", "items": _NUMBER}},
            ]
        }
    ),
]


class ScoreResponse(BaseModel):
    """Per-point results, in the shape of the input: (n_windows, window) for windows, (T,) for
    a series. ``normalized`` = score / threshold; > 1 means anomalous."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    version: int
    threshold: float
    window: int
    features: list[str]
    n_points: int
    n_anomalous: int
    scores: PointFloats | None = Field(None, description="Raw scores (unless left out by fields).")
    normalized: PointFloats | None = Field(None, description="score / threshold.")
    anomalous: PointFlags | None = Field(None, description="Whether each point is anomalous.")
    anomalous_indices: (
        Annotated[np.ndarray, _nested({"type": "integer"}, "Flat indices.")] | None
    ) = Field(
        None,
        description="Flat (row-major) indices of the anomalous points, when asked for with "
        "fields: a compact answer for long series.",
    )
    top_features: Annotated[list[Any], SkipValidation] | None = Field(
        None, description="Top-k feature names per point."
    )
    top_contributions: TopValues | None = Field(
        None, description="Their contributions (they sum with the others to the score)."
    )
    expected: Expected | None = Field(
        None, description="Reconstruction (windows: (n, window, F); series: feature -> values)."
    )

    def to_json(self) -> bytes:
        """The response body: every field in order, absent optional ones left out."""
        fields = self.__dict__  # the fields in order (iterating the model costs a generator)
        return orjson.dumps(
            {name: value for name, value in fields.items() if value is not None},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    def encode(self, media_type: str) -> bytes:
        """The response body as JSON or, for a :mod:`service.columnar` media type, as a table
        (:meth:`to_table`)."""
        if media_type == JSON:
            return self.to_json()
        return write_table(self.to_table(), media_type)

    def to_table(self) -> pa.Table:
        """The per-point fields as a table, one row per point (windows flattened row-major):
        ``scores``, ``normalized`` (null where not scored), ``anomalous``, then
        ``top{j}_feature`` (dictionary-encoded) and ``top{j}_contribution`` for j = 1..top_k
        and ``expected_<feature>``; the other fields, with the per-point ``shape``, are the
        JSON of the schema's metadata key ``reconad``."""
        columns: dict[str, pa.Array] = {}
        shape: tuple[int, ...] = (self.n_points,)
        for name in ("scores", "normalized", "anomalous"):
            value = getattr(self, name)
            if value is not None:
                array = np.asarray(value)
                shape = array.shape
                columns[name] = pa.array(array.ravel(), from_pandas=True)
        if self.top_features is not None and self.top_contributions is not None:
            names = np.asarray(self.top_features, dtype=object)  # (..., k)
            values = np.asarray(self.top_contributions, dtype=np.float64)
            for j in range(names.shape[-1]):
                feature = pa.array(names[..., j].ravel(), type=pa.string())
                columns[f"top{j + 1}_feature"] = feature.dictionary_encode()
                columns[f"top{j + 1}_contribution"] = pa.array(
                    values[..., j].ravel(), from_pandas=True
                )
        if isinstance(self.expected, dict):
            for feature, series in self.expected.items():
                columns[f"expected_{feature}"] = pa.array(np.asarray(series), from_pandas=True)
        elif self.expected is not None:
            cube = np.asarray(self.expected)  # (n, window, F)
            for j, feature in enumerate(self.features):
                columns[f"expected_{feature}"] = pa.array(cube[..., j].ravel(), from_pandas=True)
        meta = {name: value for name, value in self if name in _META_FIELDS}
        meta["shape"] = list(shape)
        return pa.table(columns).replace_schema_metadata({"reconad": orjson.dumps(meta)})


#: Fields of a score response that a columnar answer carries in its metadata.
_META_FIELDS = ("model", "version", "threshold", "window", "features", "n_points", "n_anomalous")


#: Per-point fields a score response can carry (``fields`` in the request chooses).
POINT_FIELDS = ("scores", "normalized", "anomalous", "anomalous_indices")
DEFAULT_FIELDS = frozenset(POINT_FIELDS[:3])


@dataclass
class Derived:
    """What a batch's scores give every response; requests take their slice."""

    scores: np.ndarray  # (B, W) or (T,)
    normalized: np.ndarray  # same shape: score / threshold
    anomalous: np.ndarray  # same shape, bool
    names: np.ndarray | None  # (..., k) feature names (object)
    top_values: np.ndarray | None  # (..., k) their contributions

    def response(
        self,
        loaded: LoadedVersion,
        top_k: int,
        part: slice,
        expected: Any = None,
        fields: frozenset[str] | None = None,
    ) -> ScoreResponse:
        """One request's share (``part`` of the first axis) as its response, with only the
        per-point ``fields`` asked for (``None``: scores, normalized and anomalous)."""
        chosen = fields if fields is not None else DEFAULT_FIELDS
        scores = self.scores[part]
        anomalous = self.anomalous[part]
        k = min(top_k, len(loaded.features))
        names = values = None
        if k > 0 and self.names is not None and self.top_values is not None:
            names = self.names[part][..., :k].tolist()
            values = self.top_values[part][..., :k]
        return ScoreResponse(
            model=loaded.model_name,
            version=loaded.version,
            threshold=loaded.threshold,
            window=loaded.window,
            features=loaded.features,
            n_points=int(scores.size),
            n_anomalous=int(np.count_nonzero(anomalous)),  # a fifth of sum()'s time
            scores=scores if "scores" in chosen else None,
            normalized=self.normalized[part] if "normalized" in chosen else None,
            anomalous=anomalous if "anomalous" in chosen else None,
            anomalous_indices=(
                np.flatnonzero(anomalous) if "anomalous_indices" in chosen else None
            ),
            top_features=names,
            top_contributions=values,
            expected=expected,
        )


def derive(loaded: LoadedVersion, scores: np.ndarray, contributions: np.ndarray, k: int) -> Derived:
    """Normalised scores, flags and the top-k contributing features.

    ``contributions`` has one more axis than ``scores`` (features, last).
    """
    threshold = loaded.threshold
    normalized = decision.normalize(scores, threshold)
    anomalous = decision.flags(scores, threshold)  # NaN is never flagged
    names = top_values = None
    if k > 0:
        filled = np.where(np.isnan(contributions), -np.inf, contributions)
        if k == 1:
            order = np.argmax(filled, axis=-1)[..., None]
        else:
            order = np.argsort(-filled, axis=-1, kind="stable")[..., :k]
        # np.take_along_axis(contributions, order, axis=-1), without its index building
        flat = order.reshape(-1, order.shape[-1])  # (N, k)
        rows = np.arange(len(flat))[:, None]
        features = contributions.shape[-1]
        top_values = contributions.reshape(-1, features)[rows, flat].reshape(order.shape)
        names = loaded.feature_array[order]
    return Derived(scores, normalized, anomalous, names, top_values)
