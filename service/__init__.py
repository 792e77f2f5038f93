"""ReconAD's HTTP service: a model registry, training jobs, schedules and scoring over
:mod:`detector`.

>>> from service import Settings, create_app
>>> app = create_app(Settings(data_dir="/tmp/reconad"))  # doctest: +SKIP
"""

from service.app import create_app
from service.settings import Settings

__all__ = ["Settings", "create_app"]
