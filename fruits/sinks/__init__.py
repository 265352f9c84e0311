"""Where answers go.

* :mod:`~fruits.sinks.delta`: the Delta tables (:mod:`~fruits.sinks.tables` holds their
  schemas) behind one interface, written by :mod:`~fruits.sinks.delta_rs` or
  :mod:`~fruits.sinks.delta_spark` with one exactly-once contract, and kept compact by
  :mod:`~fruits.sinks.maintenance`;
* :mod:`~fruits.sinks.eventhubs`: prediction events for the app, with the predictions table as
  their outbox.
"""
