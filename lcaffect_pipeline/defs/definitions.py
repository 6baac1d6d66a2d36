"""The one ``Definitions`` object: assets, checks, jobs, schedules, sensors, resources."""


import dagster as dg

from .automation import JOBS, SCHEDULES, SENSORS
from .checks import CHECKS
from .clips_assets import ASSETS as CLIPS_ASSETS
from .clips_assets import CHECKS as CLIPS_CHECKS
from .corpus_assets import ASSETS as CORPUS_ASSETS
from .downstream_assets import ASSETS as DOWNSTREAM_ASSETS
from .model_assets import ASSETS as MODEL_ASSETS
from .resources import CatalogueResource, ClipsResource, DownstreamResource, CleaningResource, CrawlerResource, LakeJsonIOManager, LakeResource, RunScope, V2LCTrainingResource


def build_resources() -> dict:
    lake = LakeResource()
    return {
        "lake": lake,
        "scope": RunScope(),
        "catalogue": CatalogueResource(),
        "crawler": CrawlerResource(),
        "cleaning": CleaningResource(),
        "clips": ClipsResource(),
        "v2lc_training": V2LCTrainingResource(),
        "downstream": DownstreamResource(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "io_manager": LakeJsonIOManager(lake=lake),
    }


defs = dg.Definitions(
    assets=[*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS, *DOWNSTREAM_ASSETS],
    asset_checks=[*CHECKS, *CLIPS_CHECKS],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(),
)
