"""A resource option has one default, its dataclass's: a resource that wrote its own copy once
overrode the program's (the crawler ran 6 attempts and 20 s reads while ``SourceConfig`` said 5
and 30). Each resource below declares the options of the dataclass that owns them either through
``owned`` (the dataclass's default, read at import) or as null (the program's default applies)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from lcaffect_pipeline.cleaning import CleaningConfig
from lcaffect_pipeline.clips import ClipOptions
from lcaffect_pipeline.defs import resources
from lcaffect_pipeline.human_eval.kit import KitOptions
from lcaffect_pipeline.sources import SourceConfig

# resource class -> the dataclass that owns its options (TrainConfig by name: importing it loads torch)
OWNERS = {"ClipsResource": ClipOptions, "CrawlerResource": SourceConfig, "CleaningOptions": CleaningConfig,
          "HumanEvalResource": KitOptions,
          "V2LCTrainingResource": "lcaffect_ml.train_v2lc_config.TrainConfig"}


def _owner(spec):
    if isinstance(spec, str):
        import importlib

        module, name = spec.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    return spec


def _declared(cls_name: str) -> dict[str, ast.expr]:
    tree = ast.parse(inspect.getsource(resources))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name).body
    return {s.target.id: s.value for s in body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}


def _is_null_default(value: ast.expr) -> bool:
    if isinstance(value, ast.Constant) and value.value is None:
        return True
    return (isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Field"
            and any(k.arg == "default" and isinstance(k.value, ast.Constant) and k.value.value is None
                    for k in value.keywords))


@pytest.mark.parametrize("cls_name", sorted(OWNERS))
def test_no_resource_redeclares_a_default_its_dataclass_owns(cls_name: str) -> None:
    owner = _owner(OWNERS[cls_name])
    owned = {f.name for f in dataclasses.fields(owner)}
    declared = _declared(cls_name)
    shared = owned & set(declared)
    assert shared, f"{cls_name} declares none of {owner.__name__}'s options: wrong pairing"
    copies = [name for name in sorted(shared) if not (
        _is_null_default(declared[name])
        or (isinstance(declared[name], ast.Call) and getattr(declared[name].func, "id", None) == "owned"))]
    assert copies == [], f"{cls_name} writes its own default for {copies}, which {owner.__name__} owns"


@pytest.mark.parametrize("cls_name", ["ClipsResource", "CrawlerResource", "CleaningOptions"])
def test_an_owned_default_is_the_dataclasses_own(cls_name: str) -> None:
    owner, resource = _owner(OWNERS[cls_name]), getattr(resources, cls_name)
    for f in dataclasses.fields(owner):
        if f.name in resource.model_fields:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            got = resource.model_fields[f.name].get_default(call_default_factory=True)
            assert got == (list(default) if isinstance(default, tuple) else default), (cls_name, f.name)


def test_a_null_training_option_leaves_the_programs_default() -> None:
    from lcaffect_pipeline.defs.model_assets import training_config

    cfg = training_config(resources.V2LCTrainingResource(max_steps=7), "index.json", Path("o"))
    assert cfg["max_steps"] == 7 and "lr" not in cfg and "batch_size" not in cfg  # TrainConfig's apply
