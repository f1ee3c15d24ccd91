"""The canonical flow table and the verdict table: columns, dtypes, missing-value rules."""
