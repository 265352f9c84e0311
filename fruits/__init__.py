"""Fruits! image platform: the core library shared by the batch and streaming jobs.

Its folders follow the data's path: ``sources`` (where photos come from) -> ``decode``
(bytes to pixels or a rejection, pure) -> ``features`` (InceptionV3 features and their cache)
-> ``model`` (Spark ML training, the folded scorer, the MLflow registry, the served model) ->
``sinks`` (Delta tables, Event Hubs). Beside them: ``config``, ``spark``, ``azure`` (credentials
and clients), ``upload``, ``status`` and ``cli``.
"""

__version__ = "0.1.0"
