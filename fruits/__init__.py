"""Fruits! image platform: the core library shared by the batch and streaming jobs.

Modules: ``config`` (typed settings), ``images`` (decode/validate, pure), ``featurizer``
(InceptionV3), ``feature_store`` (features cache), ``model`` (Spark ML), ``registry``
(versioned models), ``lake`` (Delta tables), ``storage`` (photo locations), ``spark``.
"""

__version__ = "0.1.0"
