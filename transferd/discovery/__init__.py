"""Discovery: sequencer output folders -> delivery units (``Run``) -> samples ready to upload.

Pure: ``rules`` (per-watch settings), ``models`` (SourceFile, Sample, Run), ``naming`` (FASTQ names),
``manifest`` (.fastq-map.csv), ``grouping`` (files -> samples, client_ids), ``completion`` (markers, quiet period).
Filesystem: ``walk`` (one pass over a run folder), ``readiness`` (complete? settled? whole gzip?), ``gzipcheck``,
``stability`` (the daemon's memory between scans), ``scanner`` (sync entry points), ``watcher`` (async),
``scan_cmd`` (the ``transferd scan`` command).
"""

from transferd.discovery.models import Run, Sample, SourceFile
from transferd.discovery.rules import DiscoveryRules

__all__ = ["DiscoveryRules", "Run", "Sample", "SourceFile"]
