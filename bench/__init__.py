"""Benchmarks behind ``fruits bench``: they print figures and the command that made them, and
never decide whether the tests pass.

* :mod:`bench.throughput`: the bare featurizer vs the full streaming job, side by side;
* :mod:`bench.latency`: upload-to-Delta latency of a running stream at a steady rate;
* :mod:`bench.discovery`: cost of finding new files, listing vs notification, by simulation,
  and of the Blob source's discovery state (SQLite) per trigger.
"""
