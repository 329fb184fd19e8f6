"""Model bundles shipped with the package (``models/<name>/``)."""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent
