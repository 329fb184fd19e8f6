"""Built-in de-identification profiles (YAML files shipped with the package)."""

from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent
