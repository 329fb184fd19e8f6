"""Network, ONNX export with parity check, and the model bundle (metadata, model card)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import VeilError
from pipeline.pixel.dbnet import prepare
from training.detector.config import DetectorConfig, ModelConfig
from training.detector.tune import METHOD

logger = logging.getLogger(__name__)

INPUT, OUTPUT = "image", "probability"
#: Largest tolerated |ONNX - torch| on a probability.
PARITY_TOLERANCE = 1e-4


class DetectorExportError(VeilError, RuntimeError):
    """The ONNX export failed or does not match the torch model."""


class KernelNet(torch.nn.Module):
    """MONAI 2-D UNet (random init) followed by a sigmoid: grey image to kernel map."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=1, out_channels=1,
                         channels=config.channels, strides=(2,) * (len(config.channels) - 1),
                         num_res_units=config.res_units, norm="batch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (training) are ``self.unet(x)``; this returns probabilities."""
        return torch.sigmoid(self.unet(x))


def multiple_of(config: ModelConfig) -> int:
    """Input sides must be multiples of this (one halving per UNet level)."""
    return int(2 ** (len(config.channels) - 1))


def export_onnx(net: KernelNet, config: ModelConfig, path: Path,
                probe: np.ndarray) -> dict[str, float]:
    """Export ``net`` (single file, dynamic batch/height/width) and check parity.

    ``probe`` is a grey uint8 image; parity is checked on it and on random noise of
    another shape. Returns ``{"parity_max_abs": ..., "ort_ms_512": ...}``.

    Raises
    ------
    DetectorExportError
        When the export fails or ONNX Runtime and torch disagree beyond tolerance.
    """
    import onnxruntime as ort

    net = net.cpu().eval()
    step = multiple_of(config)
    dummy = torch.zeros(1, 1, 4 * step, 6 * step)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"),
            3: torch.export.Dim("width")}
    try:
        program = torch.onnx.export(net, (dummy,), None, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamo=True,
                                    dynamic_shapes={"x": dims}, external_data=False,
                                    optimize=True, verbose=False)
        if program is None:
            raise DetectorExportError("torch.onnx.export returned no program")
        path.parent.mkdir(parents=True, exist_ok=True)
        program.save(str(path))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DetectorExportError(f"ONNX export failed: {type(exc).__name__}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [prepare(probe.astype(np.float32), step),
              rng.uniform(-1, 1, (2, 1, 3 * step, 5 * step)).astype(np.float32)]
    worst = 0.0
    for batch in inputs:
        onnx_out = session.run(None, {INPUT: batch})[0]
        with torch.no_grad():
            torch_out = net(torch.from_numpy(batch)).numpy()
        worst = max(worst, float(np.abs(onnx_out - torch_out).max()))
    if worst > PARITY_TOLERANCE:
        raise DetectorExportError(f"ONNX/torch parity {worst:.2e} > {PARITY_TOLERANCE:.0e}")
    square = rng.uniform(-1, 1, (1, 1, 512, 512)).astype(np.float32)
    session.run(None, {INPUT: square})
    start = time.perf_counter()
    for _ in range(5):
        session.run(None, {INPUT: square})
    ms = (time.perf_counter() - start) / 5 * 1000
    logger.info("ONNX parity %.2e; %.1f ms per 512x512 (one thread)", worst, ms)
    return {"parity_max_abs": worst, "ort_ms_512": ms}


def write_bundle(out_dir: Path, config: DetectorConfig, post: dict[str, float],
                 metrics: dict[str, float], data_seed: int, data_hash: str,
                 params: dict[str, Any]) -> dict[str, Any]:
    """Write ``metadata.json`` and ``README.md`` beside ``model.onnx``; return metadata."""
    model = (out_dir / "model.onnx").read_bytes()
    metadata: dict[str, Any] = {
        "schema": "veil-model-bundle/1",
        "name": "text-detector",
        "registered_name": config.model_name,
        "version": config.version,
        "description": "Veil text-region detector: MONAI 2-D UNet predicting DB-style "
                       "shrunk text kernels, trained on the synthetic burned-in corpus.",
        "task": "text-detection",
        "source": {"package": "models", "file": "text-detector/model.onnx",
                   "sha256": hashlib.sha256(model).hexdigest(), "bytes": len(model)},
        "license": "Apache-2.0",
        "inputs": {INPUT: {"dtype": "float32", "shape": ["batch", 1, "height", "width"],
                           "layout": "NCHW", "notes": f"height, width multiples of "
                           f"{multiple_of(config.model)}"}},
        "outputs": {OUTPUT: {"dtype": "float32", "shape": ["batch", 1, "height", "width"],
                             "notes": "per-pixel probability of a text kernel"}},
        "preprocessing": {"grey": "channel mean of RGB; grey used as is",
                          "formula": "x / 255 * 2 - 1", "resize": "none (run on the view)",
                          "pad": "edge, bottom and right",
                          "multiple_of": multiple_of(config.model)},
        "postprocessing": {"method": METHOD,
                           "thresh": post["thresh"], "box_thresh": post["box_thresh"],
                           "shrink": config.data.shrink, "pad": post["pad"],
                           "min_size": int(post["min_size"]), "min_core": post["min_core"]},
        "training": {"data_seed": data_seed, "data_sha256": data_hash,
                     "splits": "training.pixel_corpus train (fit) and validation (tuning) "
                               f"of seed {data_seed}; never seed 7 (benchmarks)",
                     "params": params},
        "metrics": metrics,
    }
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n",
                                           encoding="utf-8")
    (out_dir / "README.md").write_text(model_card(metadata), encoding="utf-8")
    return metadata


def model_card(metadata: dict[str, Any]) -> str:
    """The bundle's README (model card) from its metadata."""
    m = metadata["metrics"]
    post = metadata["postprocessing"]
    params = metadata["training"]["params"]
    excluded = params.get("exclude_backgrounds", [])
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in sorted(m.items()))
    return f"""# Veil text detector ({metadata['registered_name']} {metadata['version']})

DB-style text-region detector for burned-in annotations in DICOM pixel data: a small
MONAI 2-D UNet (random initialisation, nothing pre-trained) maps a grey view to the
probability of each pixel lying in a text line's *kernel* (the line's box shrunk on
every side by {post['shrink']} x its smaller side); connected components of the map are
grown back into line boxes. Runs on ONNX Runtime (`pipeline.pixel.dbnet.VeilTextDetector`),
selected by the profile setting `pixel.detector: veil-text-detector`.

- File: `model.onnx`, {metadata['source']['bytes']} bytes, sha256
  `{metadata['source']['sha256']}` (checked on load).
- Input `image` float32 (batch, 1, H, W), H and W multiples of
  {metadata['preprocessing']['multiple_of']}: grey `x / 255 * 2 - 1`, edge-padded.
- Output `probability` float32 (batch, 1, H, W).
- Post-processing: thresh {post['thresh']}, box_thresh {post['box_thresh']}, pad
  {post['pad']} px, min_size {post['min_size']} px, min_core {post.get('min_core', 0.0)}
  (share of a kernel's pixels at probability >= 0.9).

## Training data

Synthetic burned-in corpus (`training.pixel_corpus`, Faker identities, Pillow fonts,
phantom and pydicom test-file backgrounds), seed {metadata['training']['data_seed']}:
train split to fit, validation split to tune the post-processing and for the figures
below. Never the benchmarks' seed 7 (their held-out corpus), never the real samples of
`benchmarks.bench_real`: files drawn on a background that is a copy of one of them are
skipped ({', '.join(excluded) or 'none'}). Each file is rendered through
`pipeline.pixel.frames.views` as at run time. Hard negatives: a share
{params.get('negative_share', 0.0)} of the training crops is generated text-free
structure (`training.detector.negatives`: ultrasound-like speckle, tissue bands, cysts,
sector and image edges, dots, rulers, crosses, outlined shapes). Augmentation: scale,
contrast, brightness, polarity, blur, Gaussian noise. Data sha256
`{metadata['training']['data_sha256']}`.
Reproduce: `veil train detector --config training/configs/detector.yaml`.

## Metrics (validation views; the full pixel chain: `python -m benchmarks.bench_detectors`)

Box recall: share of ground-truth lines with >= 95% of their pixels inside detected
boxes; over-detection: detected area outside every ground-truth box / image area.

| metric | value |
|---|---|
{rows}

## Intended use and limits

Finding burned-in text lines (PHI or not) so the recogniser can read them and the PHI
decision can redact them; recall matters more than precision.

- Trained on synthetic data only: horizontal Latin text, 7-24 px fonts; not validated on
  real DICOM beyond the project's few real samples. Rotated or vertical text is not
  learned.
- Boxes are axis-aligned; adjacent lines closer than about a third of their height can
  merge into one box.
- Image structures resembling text (rulers, tick labels, dense texture) can be detected;
  components without a confident core (``min_core``) are dropped, which removes most
  speckle and tissue-edge responses on real ultrasound.
"""
