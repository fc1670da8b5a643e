"""Reads a Tessera lake with the Python Delta Lake reader and DuckDB, without Tessera.

    python read_lake.py LAKE_FOLDER
"""
import glob
import os
import site
import sys

import duckdb
from deltalake import DeltaTable

lake = sys.argv[1] if len(sys.argv) > 1 else "tessera-quickstart/tessera-data"
events = os.path.join(lake, "events")

dt = DeltaTable(events)
print(f"events: version {dt.version()}, partitioned by {dt.metadata().partition_columns}")
for commit in dt.history(3):
    info = {k: v for k, v in commit.items() if k.startswith("tessera.")}
    print(f"  commit {commit.get('version')}: {commit.get('operation')} {info}")

table = dt.to_pyarrow_table(columns=["type", "source"])
counts = table.group_by(["source", "type"]).aggregate([("type", "count")]).sort_by("source")
for row in counts.to_pylist():
    print(f"  {row['source']:<10} {row['type']:<10} {row['type_count']:>10}")

# DuckDB reads the same table through its delta extension (shipped as a pip package).
ext = glob.glob(os.path.join(site.getsitepackages()[0], "duckdb_ext/extensions/*/*/delta.duckdb_extension"))
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext[0]}'")
print(con.sql(f"""
    SELECT event_date, count(*) AS orders,
           round(sum(json_extract(properties, '$.revenue')::DOUBLE), 2) AS revenue
    FROM delta_scan('{events}')
    WHERE event = 'Order Completed'
    GROUP BY event_date ORDER BY event_date DESC LIMIT 5"""))
