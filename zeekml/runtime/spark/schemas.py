"""Spark SQL types of the pandas dtypes the engine hands Spark as rows (not packs)."""

from __future__ import annotations

#: pandas dtype -> Spark SQL type
SPARK_TYPE = {"float64": "double", "str": "string", "Int32": "int", "Int64": "bigint",
              "int32": "int", "int64": "bigint", "boolean": "boolean",
              "object": "array<string>"}


def ddl(cols: dict[str, str]) -> str:
    """A Spark DDL schema string of columns given as pandas dtypes."""
    return ", ".join(f"`{c}` {SPARK_TYPE.get(t, t)}" for c, t in cols.items())
