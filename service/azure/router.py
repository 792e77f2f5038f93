"""Routes of the Azure Anomaly Detector v1.1 API (mounted under ``/anomalydetector/v1.1``).

Keys are ReconAD API keys, sent as ``Ocp-Apim-Subscription-Key`` (what the Azure SDKs send) or
any header the rest of the API accepts; scopes as elsewhere: detection needs ``score``, model
creation and file uploads ``write``, deletions ``admin``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request, status
from starlette.responses import JSONResponse, Response

from service.azure import schemas as az
from service.azure.errors import install_azure_handlers
from service.azure.service import AzureService
from service.context import AppContext
from service.deps import AdminKey, ScoreKey, WriteKey

__all__ = ["AZURE_PREFIX", "create_azure_app"]

AZURE_PREFIX = "/anomalydetector/v1.1"

router = APIRouter()

ModelId = Annotated[str, Path(min_length=1, max_length=64)]
ResultId = Annotated[str, Path(min_length=1, max_length=64)]
FileName = Annotated[str, Path(min_length=1, max_length=128)]


def _service(request: Request) -> AzureService:
    service: AzureService = request.app.state.azure
    return service


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + AZURE_PREFIX


def _json(
    model: az._Wire, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json(by_alias=True),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


# --------------------------------------------------------------------------- univariate


@router.post("/timeseries/entire/detect", response_model=az.UnivariateEntireDetectionResult)
async def detect_entire(
    body: az.UnivariateDetectionOptions, request: Request, _key: ScoreKey
) -> Response:
    """Detect anomalies over a whole series, with a model fitted on that series."""
    return _json(await asyncio.to_thread(_service(request).detect_entire, body))


@router.post("/timeseries/last/detect", response_model=az.UnivariateLastDetectionResult)
async def detect_last(
    body: az.UnivariateDetectionOptions, request: Request, _key: ScoreKey
) -> Response:
    """Whether the series' last point is an anomaly, given the points before it."""
    return _json(await asyncio.to_thread(_service(request).detect_last, body))


@router.post(
    "/timeseries/changepoint/detect", response_model=az.UnivariateChangePointDetectionResult
)
async def detect_change_point(
    body: az.UnivariateChangePointDetectionOptions, request: Request, _key: ScoreKey
) -> Response:
    """Where the series' trend changes."""
    return _json(await asyncio.to_thread(_service(request).detect_change_points, body))


# --------------------------------------------------------------------------- data files


@router.put("/files/{name}", status_code=status.HTTP_201_CREATED)
async def put_file(
    name: FileName,
    request: Request,
    _key: WriteKey,
) -> JSONResponse:
    """Store a CSV or Parquet data file (ReconAD's stand-in for a blob upload); the answer
    holds the ``dataSource`` URL to train and detect with."""
    content = await request.body()
    url = await asyncio.to_thread(_service(request).put_file, name, content)
    return JSONResponse({"dataSource": url}, status_code=status.HTTP_201_CREATED)


@router.delete("/files/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_file(name: FileName, request: Request, _key: AdminKey) -> Response:
    """Delete an uploaded data file."""
    await asyncio.to_thread(_service(request).delete_file, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- multivariate


@router.post(
    "/multivariate/models",
    status_code=status.HTTP_201_CREATED,
    response_model=az.AnomalyDetectionModel,
)
async def train_model(body: az.ModelInfo, request: Request, _key: WriteKey) -> Response:
    """Create a model from a data source and a time range and queue its training."""
    model = await asyncio.to_thread(_service(request).create_model, body)
    location = f"{_base(request)}/multivariate/models/{model.model_id}"
    return _json(model, status.HTTP_201_CREATED, {"Location": location})


@router.get("/multivariate/models", response_model=az.ModelList)
async def list_models(
    request: Request,
    _key: ScoreKey,
    skip: Annotated[int, Query(ge=0)] = 0,
    top: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """A page of models (``nextLink`` points to the next one)."""
    return _json(await asyncio.to_thread(_service(request).list_models, skip, top, _base(request)))


@router.get("/multivariate/models/{model_id}", response_model=az.AnomalyDetectionModel)
async def get_model(model_id: ModelId, request: Request, _key: ScoreKey) -> Response:
    """A model: status, errors, training losses and the variables' states."""
    return _json(await asyncio.to_thread(_service(request).get_model, model_id))


@router.delete(
    "/multivariate/models/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_model(model_id: ModelId, request: Request, _key: AdminKey) -> Response:
    """Delete a model with its training job, versions and detection results."""
    await _service(request).delete_model(model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/multivariate/models/{model_id}:detect-batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=az.MultivariateDetectionResult,
)
async def detect_batch(
    model_id: ModelId,
    body: az.MultivariateBatchDetectionOptions,
    request: Request,
    _key: ScoreKey,
) -> Response:
    """Start a batch detection over a data source's range; poll the result id."""
    result = await _service(request).start_batch(model_id, body)
    location = f"{_base(request)}/multivariate/detect-batch/{result.result_id}"
    headers = {"Operation-Location": location, "Operation-Id": result.result_id}
    return _json(result, status.HTTP_202_ACCEPTED, headers)


@router.get("/multivariate/detect-batch/{result_id}", response_model=az.MultivariateDetectionResult)
async def get_batch_result(result_id: ResultId, request: Request, _key: ScoreKey) -> Response:
    """A batch detection's status and, once READY, its results."""
    return _json(await asyncio.to_thread(_service(request).get_result, result_id))


@router.post(
    "/multivariate/models/{model_id}:detect-last",
    response_model=az.MultivariateLastDetectionResult,
)
async def detect_last_multivariate(
    model_id: ModelId,
    body: az.MultivariateLastDetectionOptions,
    request: Request,
    _key: ScoreKey,
) -> Response:
    """Detect the last timestamp of the values sent (synchronous)."""
    return _json(await _service(request).detect_last_multivariate(model_id, body))


def create_azure_app(context: AppContext) -> FastAPI:
    """The sub-application serving the Azure API, with its own error shape.

    Parameters
    ----------
    context
        The main app's services (the sub-app shares them).

    Returns
    -------
    FastAPI
        Mount it at :data:`AZURE_PREFIX`.
    """
    app = FastAPI(
        title="ReconAD: Azure Anomaly Detector v1.1 compatible API",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    app.state.azure = AzureService(
        context.settings,
        context.db,
        context.registry,
        context.jobs,
        context.scoring,
        context.artifacts,
        context.deletion,
    )
    install_azure_handlers(app)
    app.include_router(router)
    return app
