"""I/O edges: walking sources, reading instances, writing outputs and reports.

``pipeline.io.sinks`` (:class:`FolderSink`) and ``pipeline.io.report`` (the
JSON report) are imported from their modules; this package imports neither,
so reading and walking work without loading the engine.
"""

from pipeline.io.reader import read_instance
from pipeline.io.sources import iter_sources

__all__ = ["iter_sources", "read_instance"]
