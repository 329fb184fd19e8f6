"""Burned-in text (pixel PHI): frame views, text detection and recognition.

The heavy runtime (onnxruntime, OpenCV) is imported lazily by :mod:`pipeline.pixel.ppocr`
only, so ``import pipeline.pixel`` stays cheap and safe for the core install.
"""

from pipeline.pixel.phi import Finding, decide
from pipeline.pixel.types import Recognition, TextBox, TextDetector, TextRecognizer

__all__ = ["Finding", "Recognition", "TextBox", "TextDetector", "TextRecognizer", "decide"]
