"""Where photos come from, as Spark DataFrames of one shape (:mod:`fruits.sources.schema`).

* :mod:`~fruits.sources.landing`: the stream's source for this environment, which is
  :mod:`~fruits.sources.uploads` (the ``fruits_uploads`` Python data source over a folder or
  Blob, its :mod:`~fruits.sources.stores`, :mod:`~fruits.sources.discovery` state and Event Grid
  :mod:`~fruits.sources.events`) or :mod:`~fruits.sources.autoloader` (Databricks);
* :mod:`~fruits.sources.training`: labelled photos, ``<Class>/*.jpg``, for the batch jobs;
* :mod:`~fruits.sources.names`: which file names are photos, one rule for all of them.
"""
