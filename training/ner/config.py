"""The NER training configuration (``training/configs/ner.yaml``), validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import VeilError


class NerConfigError(VeilError, ValueError):
    """The NER training configuration is missing or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Synthetic data: seed and split sizes (test uses held-out templates too)."""

    seed: int = 20261124
    train: int = Field(default=24000, ge=8)
    validation: int = Field(default=2000, ge=4)
    test: int = Field(default=4000, ge=4)
    extra_share: float = Field(default=0.0, ge=0, lt=1,
                               description="share of train-only templates in the train split")


class TokenizerConfig(_Strict):
    """Byte-level BPE trained on the training split."""

    vocab_size: int = Field(default=6000, ge=300, le=32000)
    min_frequency: int = Field(default=2, ge=1)


class ModelConfig(_Strict):
    """Small BERT token classifier, configured locally."""

    hidden_size: int = Field(default=128, ge=16, le=512)
    num_layers: int = Field(default=3, ge=1, le=8)
    num_heads: int = Field(default=4, ge=1, le=16)
    intermediate_size: int = Field(default=512, ge=16, le=2048)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    max_length: int = Field(default=128, ge=16, le=512)
    window: int = Field(default=64, ge=8, le=510, description="tokens per inference window")


class TrainConfig(_Strict):
    """Optimisation, early stopping and limits."""

    epochs: int = Field(default=6, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    patience: int = Field(default=2, ge=1)
    eval_every: int = Field(default=0, ge=0, description="steps between evaluations; 0: epoch")
    max_steps: int = Field(default=0, ge=0, description="0: no limit")
    max_minutes: float = Field(default=13.0, gt=0)
    threads: int = Field(default=1, ge=1, description="torch CPU threads")
    log_every: int = Field(default=50, ge=1)


class ExportConfig(_Strict):
    """ONNX export and the ONNX Runtime / PyTorch parity check."""

    opset: int = Field(default=17, ge=14, le=21)
    parity_tolerance: float = Field(default=1e-4, gt=0)


class NerConfig(_Strict):
    """Everything one NER training run needs."""

    name: str = "veil-phi-ner"
    version: str = "1.0.0"
    seed: int = 1234
    threshold: float = Field(default=0.5, gt=0, lt=1)
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()


def load_config(config: dict[str, Any] | str | Path) -> NerConfig:
    """Validate ``config`` (a mapping or a YAML file path) into a :class:`NerConfig`."""
    try:
        if isinstance(config, dict):
            raw = config
        else:
            raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        return NerConfig.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise NerConfigError(f"invalid NER training config ({type(exc).__name__})") from exc
