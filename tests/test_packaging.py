"""The core installs and imports without the heavy extras."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import pipeline, pipeline.engine, pipeline.cli, pipeline.job, pipeline.profile, pipeline.text
import serving, training, profiles, models
heavy = sorted(m for m in ("torch", "ray", "mlflow", "onnxruntime", "transformers", "cupy")
               if m in sys.modules)
print(",".join(heavy))
"""


def test_core_imports_without_torch_or_ray():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_builtin_profiles_and_standard_tables_ship_with_the_package():
    from importlib import resources

    names = {p.name for p in resources.files("profiles").iterdir()}
    assert {"dicom-basic.yaml", "hipaa-safe-harbor.yaml", "gdpr.yaml", "clinical-trial.yaml",
            "institution-example.yaml"} <= names
    data = {p.name for p in resources.files("pipeline.standard").joinpath("data").iterdir()}
    assert {"table_E.1-1.json", "table_E.3.10-1.json", "cid7050.json"} <= data
