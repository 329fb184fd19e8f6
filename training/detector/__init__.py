"""Veil text-region detector: a small DB-style segmentation network trained on the synthetic
burned-in corpus (:mod:`training.pixel_corpus`, train split only), exported to ONNX.

Entry point: :func:`training.detector.train.run`. The run-time detector is
:class:`pipeline.pixel.dbnet.VeilTextDetector` (ONNX Runtime only, no torch).
"""
