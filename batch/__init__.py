"""The batch (re)training job: thin wiring of :mod:`fruits` calls, plus report rendering."""
