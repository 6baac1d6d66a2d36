"""Declarative automation: retrain / re-extract only when an input's *data* changed.

Evaluated without a daemon (``dg.evaluate_automation_conditions``) on an ephemeral instance,
tick by tick, passing the cursor on as the daemon would.
"""

import logging

import dagster as dg
import pytest

from lcaffect_pipeline.defs.automation import ON_NEW_DATA
from lcaffect_pipeline.defs.sensors import retrain_on_new_data

logging.getLogger("dagster").setLevel(logging.WARNING)  # keep the run logs out of the test output

DATA_VERSION_TAG = "dagster/data_version"  # dagster._core.definitions.data_version.DATA_VERSION_TAG


def chain(condition: dg.AutomationCondition, shards_version: dict) -> list[dg.AssetsDefinition]:
    """Stand-ins with the project's shape: shards → encoder → features (the condition under test)."""

    @dg.asset(name="training_shards")
    def shards() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion(shards_version["v"]))

    @dg.asset(name="v2lc_encoder", deps=["training_shards"], automation_condition=condition)
    def encoder() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion("weights-1"))

    @dg.asset(name="meld_features", deps=["v2lc_encoder"], automation_condition=condition)
    def features() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion("features-1"))

    return [shards, encoder, features]


class Ticker:
    """Successive evaluations of the automation conditions, as the sensor's ticks would be."""

    def __init__(self, assets, instance):
        self.assets, self.instance, self.cursor = assets, instance, None

    def __call__(self) -> set[str]:
        result = dg.evaluate_automation_conditions(defs=self.assets, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {k.to_user_string() for k in (dg.AssetKey(a.key.path) for a in self.assets) if result.get_num_requested(k)}


def test_same_data_version_does_not_retrain_and_new_data_does() -> None:
    version = {"v": "shards-a"}
    assets = chain(ON_NEW_DATA, version)
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticker(assets, instance)
    assert tick() == set()  # nothing materialised: the encoder's input is missing, so wait
    assert dg.materialize(assets, instance=instance).success
    assert tick() == set()  # everything fresh
    assert dg.materialize(assets[:1], instance=instance).success  # the daily re-crawl: same shards
    assert tick() == set()
    version["v"] = "shards-b"  # new comments → new shards content
    assert dg.materialize(assets[:1], instance=instance).success
    assert tick() == {"v2lc_encoder", "meld_features"}  # features follow the requested encoder in the same tick
    assert tick() == set()  # handled: not requested again on the next tick


def test_eager_would_retrain_on_a_same_content_rematerialisation() -> None:
    """Why ON_NEW_DATA and not eager(): eager reacts to any materialisation of a dependency."""
    assets = chain(dg.AutomationCondition.eager(), {"v": "shards-a"})
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticker(assets, instance)
    tick()
    assert dg.materialize(assets, instance=instance).success
    tick()
    assert dg.materialize(assets[:1], instance=instance).success
    assert "v2lc_encoder" in tick()


def test_missing_encoder_is_built_once_its_input_exists() -> None:
    assets = chain(ON_NEW_DATA, {"v": "shards-a"})
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticker(assets, instance)
    tick()
    assert dg.materialize(assets[:1], instance=instance).success
    assert tick() == {"v2lc_encoder", "meld_features"}


def report(instance: dg.DagsterInstance, key: str, version: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(key, tags={DATA_VERSION_TAG: version}))


def test_project_definitions_react_to_shard_data_only() -> None:
    """The real asset graph (nothing executed: materialisations are reported with data versions)."""
    from lcaffect_pipeline.definitions import defs

    keys = [k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()]
    instance = dg.DagsterInstance.ephemeral()
    for key in keys:
        report(instance, key, "v1")
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    def tick() -> set[str]:
        nonlocal cursor
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        return {k for k in keys if result.get_num_requested(dg.AssetKey(k))}

    assert tick() == set()
    report(instance, "training_shards", "v1")  # re-materialised, same content
    assert tick() == set()
    report(instance, "training_shards", "v2")
    requested = tick()
    assert "v2lc_encoder" in requested
    assert {f"{t}_features" for t in ("chsims2", "meld", "mustard")} <= requested
    assert {f"{t}_fusion_{w}_lc" for t in ("chsims2", "meld", "mustard") for w in ("with", "without")} <= requested
    assert "ablation_report" in requested
    assert not requested & {"training_shards", "segments", "clean_comments", "meld_utterances"}  # no upstream re-runs
    assert tick() == set()  # requested once, not again while those runs would be going
    report(instance, "meld_utterances", "v2")  # one task's dataset changed: only that task's chain
    requested = tick()
    assert {"meld_features", "meld_fusion_with_lc", "meld_fusion_without_lc", "ablation_report"} <= requested
    assert not requested & {"v2lc_encoder", "chsims2_features", "mustard_features"}


@pytest.mark.parametrize("name", ["v2lc_encoder", "meld_features", "chsims2_fusion_with_lc", "mustard_fusion_without_lc", "ablation_report"])
def test_expensive_assets_carry_the_condition(name: str) -> None:
    from lcaffect_pipeline.definitions import defs

    assert defs.resolve_assets_def(name).automation_conditions_by_key[dg.AssetKey(name)] == ON_NEW_DATA


def test_automation_sensor_ships_stopped_and_covers_every_asset() -> None:
    from lcaffect_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def("retrain_on_new_data")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor is retrain_on_new_data
    # corpus assets have no condition: the schedule and the catalogue sensor drive them
    assert not defs.resolve_assets_def("video_catalogue").automation_conditions_by_key.get(dg.AssetKey("video_catalogue"))
