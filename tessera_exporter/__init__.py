"""Tessera's cluster view: who holds which share of which device, and what waits and why.

* :mod:`tessera_exporter.model`: slices, claims and pods reduced to records; the view (pure).
* :mod:`tessera_exporter.metrics`: the Prometheus metrics of a view (HAMi's names where the meaning
  is the same, ``tessera_cluster_*`` otherwise).
* :mod:`tessera_exporter.exporter`: the watches and the ``/metrics`` server.
* :mod:`tessera_exporter.top`: ``tessera top``, the view as tables in a terminal.
* :mod:`tessera_exporter.cli`: ``tessera exporter|top`` (``python -m tessera_exporter``).
"""
