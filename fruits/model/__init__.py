"""Features -> answers: training, scoring, the registry of versions and the served model.

* :mod:`~fruits.model.classifier`: Spark ML standardise -> PCA -> classifier, trained and
  compared; :mod:`~fruits.model.metrics` the pure computations behind it;
  :mod:`~fruits.model.splits` the validation split (runs of video frames, never random
  frames); :mod:`~fruits.model.unknown` the "unknown" detector and its calibration;
* :mod:`~fruits.model.scoring`: a linear model folded into numpy, scored inside the UDF;
* :mod:`~fruits.model.registry`: MLflow's registry: versions, the ``champion`` alias, a
  version's files;
* :mod:`~fruits.model.pyfunc`: the model as an MLflow pyfunc (photo bytes -> answer);
* :mod:`~fruits.model.serving`: the version a long-running stream serves, hot-swapped.
"""
