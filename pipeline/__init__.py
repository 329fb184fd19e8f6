"""Veil: de-identification of DICOM studies.

The ``pipeline`` package is the engine. It imports neither torch nor Ray: the
heavy parts live behind optional extras and are loaded only when used.
"""

__version__ = "0.1.0"
