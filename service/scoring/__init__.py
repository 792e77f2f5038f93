"""Scoring: the request and response models, the loaded-version cache, the micro-batcher and
the service that ties them together.

The path of a score request:

1. :class:`ScoreRequest` (:mod:`~service.scoring.request`) parses and checks the raw body into
   numpy arrays, then against the model that scores it; every rule about what can be scored
   lives there.
2. :class:`ScoringService` (:mod:`~service.scoring.service`) resolves the model's active or
   pinned version and gets the loaded detector from :class:`DetectorCache`
   (:mod:`~service.scoring.cache`, LRU over ``(model_id, version)``).
3. :class:`MicroBatcher` (:mod:`~service.scoring.batcher`) queues the request behind others for
   the same version and scores them together in the inference thread pool.
4. :class:`ScoreResponse` (:mod:`~service.scoring.response`) is built from the batch's scores
   and encoded in that thread.
"""

from service.scoring.batcher import MicroBatcher
from service.scoring.cache import DetectorCache, LoadedVersion
from service.scoring.request import ScoreRequest
from service.scoring.response import ScoreResponse
from service.scoring.service import ScoringService

__all__ = [
    "DetectorCache",
    "LoadedVersion",
    "MicroBatcher",
    "ScoreRequest",
    "ScoreResponse",
    "ScoringService",
]
