"""Decoded photos -> InceptionV3 transfer-learning features.

* :mod:`~fruits.features.inception`: the network's blocks and their cost;
* :mod:`~fruits.features.featurizer`: the extractor (ONNX Runtime or Keras) and its Spark UDF;
* :mod:`~fruits.features.store`: the ``features`` Delta table as a cache, one row per photo
  and extractor.
"""
