"""Watching the running system from outside it: it reads the tables, the registry and the
landing, never writes them. ``status`` (counts, latency, last answers), ``health`` (the rules
``fruits status --check`` applies), ``drift`` (live answers against the training report's),
``dashboard`` (the local web page)."""
