"""The score response: per-point results derived from a model's scores, and their encoding.

:class:`ScoreResponse` is the documented response schema and the object that is encoded: its
array fields hold numpy arrays, which :meth:`ScoreResponse.to_json` writes with orjson's numpy
support (no Python lists of a million floats), or :meth:`ScoreResponse.encode` as an Arrow IPC
stream or Parquet table when the client's ``Accept`` asks for one. :func:`derive` computes the
normalised scores, the flags and the top-k contributing features once for a whole batch, which
the batcher then slices per request. The top features stay indices into the model's features
(:class:`TopFeatures`) until they are encoded: a JSON answer writes each distinct row of names
once and repeats its bytes, a table answer takes the indices as a dictionary column, so no
Python object is made per point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, WithJsonSchema

from detector import decision
from service.columnar import JSON, write_table
from service.scoring.cache import LoadedVersion

__all__ = ["Derived", "ScoreResponse", "TopFeatures", "derive"]


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


#: Below this many points the top features are encoded as one list (what the splice writes too).
_SPLICE_ROWS = 8192


@dataclass(slots=True)
class TopFeatures:
    """The top-k contributing features of every point, as indices into ``names``."""

    order: np.ndarray  # (..., k) integer indices into names
    names: np.ndarray  # (F,) object: the model's feature names

    @property
    def long(self) -> bool:
        """Whether :meth:`to_json` splices encoded rows: a long answer whose rows can take few
        distinct values (k of F features in order), so that most points repeat a row."""
        if self.order.size < _SPLICE_ROWS:  # the hot path of short answers: no more to ask
            return False
        *_, k = self.order.shape
        rows = self.order.size // max(k, 1)
        n_features = len(self.names)
        if rows < _SPLICE_ROWS or math.perm(n_features, k) > rows // 4:
            return False
        return bool(n_features**k < 2**62)  # a row's code fits an int64

    def tolist(self) -> list[Any]:
        """The names as nested lists, in the shape of ``order``."""
        rows: list[Any] = self.names[self.order].tolist()
        return rows

    def to_json(self) -> bytes:
        """The JSON of :meth:`tolist`, byte for byte; for long answers each distinct row of
        names is encoded once and its bytes repeated (a point costs a reference, not a list)."""
        order = self.order
        k = order.shape[-1]
        if not self.long:
            return orjson.dumps(self.tolist())
        rows = order.reshape(-1, k)
        n_features = len(self.names)
        codes = np.zeros(len(rows), dtype=np.int64)  # fits: long says n_features**k is small
        for j in range(k):
            codes = codes * n_features + rows[:, j]
        powers = n_features ** np.arange(k - 1, -1, -1, dtype=np.int64)
        if n_features**k <= len(rows):  # a table of every code, indexed: no sort
            present = np.flatnonzero(np.bincount(codes, minlength=n_features**k))
            table = np.empty(n_features**k, dtype=object)
            table[present] = self._encoded(present[:, None] // powers % n_features)
            pieces = table[codes]
        else:
            present, inverse = np.unique(codes, return_inverse=True)
            pieces = self._encoded(present[:, None] // powers % n_features)[inverse]
        return _join(pieces.reshape(order.shape[:-1]))

    def _encoded(self, rows: np.ndarray) -> np.ndarray:
        """The JSON of each row of indices (k,) as names, an object array of bytes."""
        out = np.empty(len(rows), dtype=object)
        out[:] = [orjson.dumps(self.names[row].tolist()) for row in rows]
        return out

    def columns(self) -> list[pa.DictionaryArray]:
        """One dictionary-encoded column per rank (flattened row-major), indices into the
        names."""
        dictionary = pa.array(self.names.tolist(), type=pa.string())
        order = self.order.reshape(-1, self.order.shape[-1]).astype(np.int32)
        return [
            pa.DictionaryArray.from_arrays(pa.array(order[:, j]), dictionary)
            for j in range(order.shape[1])
        ]


def _join(pieces: np.ndarray) -> bytes:
    """A JSON array of (nested arrays of) already encoded values, an object array."""
    if pieces.ndim == 1:
        return b"[" + b",".join(pieces.tolist()) + b"]"
    return b"[" + b",".join(_join(inner) for inner in pieces) + b"]"


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
    top_features: (
        Annotated[TopFeatures, SkipValidation, WithJsonSchema({"type": "array", "items": {}})]
        | None
    ) = Field(None, description="Top-k feature names per point.")
    top_contributions: TopValues | None = Field(
        None, description="Their contributions (they sum with the others to the score)."
    )
    expected: Expected | None = Field(
        None, description="Reconstruction (windows: (n, window, F); series: feature -> values)."
    )

    def to_json(self) -> bytes:
        """The response body: every field in order, absent optional ones left out."""
        fields = self.__dict__  # the fields in order (iterating the model costs a generator)
        present = {name: value for name, value in fields.items() if value is not None}
        top = self.top_features
        if top is None or not top.long:
            if top is not None:
                present["top_features"] = top.tolist()
            return orjson.dumps(present, option=orjson.OPT_SERIALIZE_NUMPY)
        # a long answer: its top features spliced between the fields before and after them
        names = list(present)
        at = names.index("top_features")
        head = orjson.dumps({n: present[n] for n in names[:at]}, option=orjson.OPT_SERIALIZE_NUMPY)
        tail = orjson.dumps(
            {n: present[n] for n in names[at + 1 :]}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        rest = b"," + tail[1:] if len(tail) > 2 else b"}"
        return head[:-1] + b',"top_features":' + top.to_json() + rest

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
            values = np.asarray(self.top_contributions, dtype=np.float64)  # (..., k)
            for j, feature in enumerate(self.top_features.columns()):
                columns[f"top{j + 1}_feature"] = feature
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
    order: np.ndarray | None  # (..., k) indices of the top features
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
        if k > 0 and self.order is not None and self.top_values is not None:
            names = TopFeatures(self.order[part][..., :k], loaded.feature_array)
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
    order = top_values = None
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
    return Derived(scores, normalized, anomalous, order, top_values)
