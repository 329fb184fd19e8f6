"""Configuration of a detector training run (YAML, validated, unknown keys rejected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import VeilError


class DetectorConfigError(VeilError, ValueError):
    """A detector training configuration is unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Synthetic corpus: which files, how they are cut into training crops."""

    seed: int = 1000
    train_files: int = Field(default=200, ge=1)
    validation_files: int = Field(default=30, ge=1)
    views_per_file: int = Field(default=2, ge=1, le=3)
    crop: int = Field(default=192, ge=32, le=1024)
    text_crop_share: float = Field(default=0.75, ge=0, le=1)
    shrink: float = Field(default=0.25, gt=0, lt=0.5)
    #: Share of training crops that are generated text-free structure
    #: (:mod:`training.detector.negatives`): speckle, markers, rulers, edges.
    negative_share: float = Field(default=0.0, ge=0, lt=1)
    #: Corpus files on these backgrounds (``Sample.background``) are never used: pydicom's
    #: ``examples_rgb_color.dcm`` is a downsampled copy of ``US1_UNCR.dcm``, one of the
    #: real samples the benchmarks evaluate on.
    exclude_backgrounds: tuple[str, ...] = ("pydicom:examples_rgb_color.dcm",)


class AugmentConfig(_Strict):
    """Random augmentation of every crop."""

    scale_min: float = Field(default=0.7, gt=0)
    scale_max: float = Field(default=1.4, gt=0)
    contrast_min: float = Field(default=0.4, gt=0)
    invert: float = Field(default=0.3, ge=0, le=1)
    noise_max: float = Field(default=12.0, ge=0)
    blur: float = Field(default=0.2, ge=0, le=1)


class ModelConfig(_Strict):
    """MONAI UNet (random initialisation)."""

    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    res_units: int = Field(default=1, ge=0, le=3)


class OptimConfig(_Strict):
    """Optimiser and schedule."""

    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = 0
    threads: int = Field(default=1, ge=1)
    log_every: int = Field(default=50, ge=1)


class PostConfig(_Strict):
    """Post-processing written into the bundle (``thresh`` and ``box_thresh`` are tuned on
    the validation files when ``tune`` is on)."""

    thresh: float = Field(default=0.5, gt=0, lt=1)
    box_thresh: float = Field(default=0.6, gt=0, lt=1)
    pad: float = Field(default=1.0, ge=0)
    min_size: int = Field(default=2, ge=1)
    #: Minimum share of a kernel component's pixels at probability >= 0.9.
    min_core: float = Field(default=0.0, ge=0, le=1)
    #: Generated text-free views (:func:`training.detector.tune.negative_views`) added to
    #: the validation views when tuning: what is detected on them is over-detection.
    negatives: int = Field(default=0, ge=0)
    #: Tuning objective: the highest validation box recall first, then the least
    #: over-detection (False: recall - OVER_WEIGHT * over-detection).
    recall_first: bool = False
    tune: bool = True


class DetectorConfig(_Strict):
    """A whole training run."""

    model_name: str = "veil-text-detector"
    version: str = "1.0.0"
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    post: PostConfig = PostConfig()


def load_config(config: dict[str, Any] | str | Path) -> DetectorConfig:
    """A validated configuration from a mapping or a YAML file path.

    Raises
    ------
    DetectorConfigError
        When the file cannot be read or the content does not validate.
    """
    try:
        if isinstance(config, dict):
            data = config
        else:
            data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        return DetectorConfig.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise DetectorConfigError(f"detector config unreadable: {type(exc).__name__}") from exc
    except ValidationError as exc:
        raise DetectorConfigError(f"detector config invalid: {exc}") from exc
