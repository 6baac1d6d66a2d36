"""The training programs' options are documented where they are declared, and ``--help`` prints
them all: the command line is the reference (``lcaffect_ml.options``)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from conftest import undocumented

from lcaffect_ml.options import opt, options_help
from lcaffect_ml.extract_features import ExtractConfig
from lcaffect_ml.fusion_data import FusionTrainConfig
from lcaffect_ml.train_v2lc_config import TrainConfig

PROGRAMS = {"lcaffect_ml.train_v2lc": TrainConfig, "lcaffect_ml.extract_features": ExtractConfig,
            "lcaffect_ml.train_fusion": FusionTrainConfig}


@pytest.mark.parametrize("config_cls", PROGRAMS.values(), ids=lambda c: c.__name__)
def test_every_option_has_help(config_cls) -> None:
    assert undocumented(config_cls) == []


@pytest.mark.parametrize("module", PROGRAMS)
def test_help_lists_every_option_with_its_default(module) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for field in dataclasses.fields(PROGRAMS[module]):
        assert any(line.lstrip().startswith(field.name + " ") or line.strip() == field.name for line in lines), field.name
    assert "(default 0.1)" in out.stdout or module != "lcaffect_ml.train_v2lc"


def test_options_help_marks_required_defaults_and_sections() -> None:
    @dataclasses.dataclass
    class Cfg:
        data: str = opt(help="where the data is", section="Input")
        lr: float = opt(1e-3, "peak learning rate", section="Optimisation")
        betas: list = opt(help="AdamW betas", factory=lambda: [0.9, 0.98])
        name: str | None = opt(None, "an optional name")
        bare: int = 3

    text = options_help(Cfg)
    assert "Input:\n  data" in text and "where the data is (required)" in text
    assert "Optimisation:\n  lr" in text and "peak learning rate (default 0.001)" in text
    assert "AdamW betas (default [0.9, 0.98])" in text
    assert "an optional name\n" in text + "\n" and "(default None)" not in text
    assert undocumented(Cfg) == ["bare"]
    with pytest.raises(TypeError):
        Cfg()  # `data` is required
    assert Cfg(data="x").betas == [0.9, 0.98] and Cfg(data="x").betas is not Cfg(data="y").betas
