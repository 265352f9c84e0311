"""Register the stream's Delta tables in Unity Catalog, for the bundle's dashboard and alerts.

The jobs write ``predictions`` and ``quarantine`` by path, under the lake
(``abfss://lake@<account>.dfs.core.windows.net/fruits/lake/<table>``); a SQL warehouse's
dashboard and alerts read them by name, ``<catalog>.<schema>.<table>``: external tables over
those paths. The bundle's job ``fruits_tables`` runs this once after a deploy; it may run any
number of times (a table already registered is left as it is). A path without a Delta table yet
gets one with the contract's schema (``fruits/sinks/tables.py``), NOT NULL columns included, as
the stream's writer would create it, so the dashboard opens before the first photo.

    python dashboards/register_tables.py --config databricks --catalog main --schema fruits
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from fruits.config import load_config
from fruits.sinks.tables import PREDICTIONS, QUARANTINE, SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TABLES = (PREDICTIONS, QUARANTINE)


def register(spark: SparkSession, catalog: str, schema: str, lake: str) -> dict[str, str]:
    """Each table of ``TABLES`` named ``catalog.schema.table`` over ``<lake>/<table>``; what
    was done to each: "exists" (left as it is), "registered" (over the table the stream
    wrote) or "created" (an empty table with the contract's schema)."""
    from delta.tables import DeltaTable
    from pyspark.sql.pandas.types import from_arrow_schema

    done: dict[str, str] = {}
    for table in TABLES:
        name = f"{catalog}.{schema}.{table}"
        location = f"{lake.rstrip('/')}/{table}"
        if "'" in location or "`" in name:
            raise ValueError(f"refusing a quote in {name} / {location}")
        quoted = ".".join(f"`{part}`" for part in (catalog, schema, table))
        if spark.catalog.tableExists(name):
            done[table] = "exists"
        elif DeltaTable.isDeltaTable(spark, location):
            # The table's own schema (columns added since included): none given here.
            spark.sql(f"CREATE TABLE IF NOT EXISTS {quoted} USING DELTA LOCATION '{location}'")
            done[table] = "registered"
        else:
            columns = ", ".join(
                f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
                for f in from_arrow_schema(SCHEMAS[table])
            )
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {quoted} ({columns}) USING DELTA LOCATION '{location}'"
            )
            done[table] = "created"
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="databricks", help="packaged config or a file")
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--schema", required=True)
    args = parser.parse_args(argv)
    from fruits.spark import get_spark

    config = load_config(args.config, environ=os.environ)
    spark = get_spark(config)  # a job's cluster session (getOrCreate)
    for table, what in register(spark, args.catalog, args.schema, config.path("lake")).items():
        print(f"{args.catalog}.{args.schema}.{table}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
