"""The streaming job (landing discovery, micro-batch step, sinks): see issue #3."""
