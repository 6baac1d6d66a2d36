"""The plain modules import without Dagster (a training machine need not install the orchestrator);
only ``lcaffect_pipeline.definitions`` and ``lcaffect_pipeline.defs`` build the code location."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import lcaffect_ml
import lcaffect_pipeline

from conftest import ROOT

# The code location (its entry module only re-exports ``defs``) and the Dagster definitions.
DAGSTER_SIDE = ("lcaffect_pipeline.definitions", "lcaffect_pipeline.defs")
# Importing any of these fails in the child: dagster is "not installed" there. dagster_pipes is a
# separate, light package that lcaffect_ml.pipes may use.
BLOCKER = """
import sys
class _NoDagster:
    def find_spec(self, name, path=None, target=None):
        if name == "dagster" or name.startswith("dagster."):
            raise ImportError(f"dagster is not installed here (import of {name})")
sys.meta_path.insert(0, _NoDagster())
"""


def _plain_modules() -> list[str]:
    names = []
    for package in (lcaffect_pipeline, lcaffect_ml):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(DAGSTER_SIDE):
                names.append(info.name)
    return sorted(names)


def test_every_plain_module_imports_without_dagster() -> None:
    modules = _plain_modules()
    assert {"lcaffect_pipeline.formats", "lcaffect_pipeline.schema", "lcaffect_pipeline.segments",
            "lcaffect_pipeline.cleaning", "lcaffect_ml.train_v2lc"} <= set(modules)
    code = BLOCKER + "import importlib\nfor m in %r:\n    importlib.import_module(m)\n" % modules
    code += "assert 'dagster' not in sys.modules\nprint('ok', len(%r))\n" % modules
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_blocker_does_block_the_code_location() -> None:
    """The check above would pass vacuously if the blocker let dagster through."""
    code = BLOCKER + "import lcaffect_pipeline.definitions\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "dagster is not installed here" in done.stderr


def test_public_entry_points_stay_where_users_import_them() -> None:
    from lcaffect_pipeline.cleaning import CleaningConfig, clean_comments  # noqa: F401
    from lcaffect_pipeline.definitions import defs
    from lcaffect_pipeline.formats import CommentFormatError, read_comments  # noqa: F401
    from lcaffect_pipeline.segments import segment_video
    from lcaffect_pipeline.probe import VideoDecodeError  # noqa: F401

    assert defs.get_job_def("full_pipeline") is not None
