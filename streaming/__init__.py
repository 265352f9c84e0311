"""The streaming job: landing discovery, the micro-batch step and its sinks, wired by
:mod:`streaming.job`."""
