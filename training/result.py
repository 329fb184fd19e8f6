"""What a training run hands to tracking: the shipped artifact and how it was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    """One finished training run (the input of MLflow logging and registration).

    Attributes
    ----------
    model_name : str
        Registered model name (``veil-phi-ner`` or ``veil-text-detector``).
    bundle_dir : Path
        Folder laid out like ``models/<name>/``: ``model.onnx``, ``metadata.json``,
        ``README.md`` (the model card) and any extra files (tokenizer...).
    params : dict
        Hyper-parameters and data settings, flat, JSON-serialisable.
    metrics : dict
        Final metrics (validation and held-out test), flat name -> float.
    data_seed : int
        Seed of the synthetic data.
    data_hash : str
        sha256 of the generated training data (reproducibility check).
    history : list
        Per-step or per-epoch metric dicts (``{"step": int, "loss": float, ...}``).
    """

    model_name: str
    bundle_dir: Path
    params: dict[str, Any]
    metrics: dict[str, float]
    data_seed: int
    data_hash: str
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def onnx_path(self) -> Path:
        """The exported single-file ONNX model."""
        return self.bundle_dir / "model.onnx"

    @property
    def model_card(self) -> Path:
        """The model card."""
        return self.bundle_dir / "README.md"
