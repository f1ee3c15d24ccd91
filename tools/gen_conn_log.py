"""Build a large, realistic Zeek conn.log from real rows of ../shared/data (for benchmarks).

Rows are sampled (with replacement) from real TSV conn logs in the shared captures and
varied plausibly, so the file has the value mix of real traffic but no repeated flow:

- ``uid``: a fresh Zeek-style id (``C`` + 17 base62 characters) per row;
- ``ts``: increasing log time from a fixed start, with exponential gaps whose mean
  gives the requested flows per second (default 1000/s), six decimals as Zeek writes;
- hosts: each address keeps its network part and gets its last IPv4 octet shifted by a
  per-row host offset drawn from a small pool (internal hosts stay few, peers many);
- every other field keeps its real, already-escaped value (``-``, ``(empty)``, ``\\xNN``).

The header is Zeek's standard 21-field conn layout (``#separator \\x09`` ... ``#close``).

Usage: ``python tools/gen_conn_log.py OUT [--rows 1000000] [--seed 1]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "zeek").resolve()

#: real TSV conn logs with the standard columns (+ extras that are dropped)
SOURCES = (
    "stratosphere-008-mixed/conn.log.labeled",
    "stratosphere-010-mixed/conn.log.labeled",
    "rita-proxy-rolling/conn.16:00:00-17:00:00.log.gz",
    "rita-proxy/conn.log",
    "stratosphere-003-androidtester-rat/conn.log",
    "rita-open-conns/open/open_conn.log",
)

FIELDS = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents",
)  # fmt: skip
TYPES = (
    "time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count",
    "count", "string", "bool", "bool", "count", "string", "count", "count", "count", "count",
    "set[string]",
)  # fmt: skip

_B62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)


def _raw_rows(path: Path) -> pa.Table:
    """All data rows of a Zeek TSV file as raw strings, by #fields name."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    fields = next(line for line in lines if line.startswith(b"#fields")).decode().split("\t")[1:]
    body = b"\n".join(line for line in lines if line and not line.startswith(b"#")) + b"\n"
    table = pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(column_names=fields),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={f: pa.string() for f in fields},
            null_values=[],
            strings_can_be_null=False,
            include_columns=[f for f in FIELDS if f in fields],
        ),
    )
    for f in FIELDS:  # old layouts: fill a missing column with unset
        if f not in table.column_names:
            table = table.append_column(f, pa.array(["-"] * table.num_rows))
    return table.select(list(FIELDS))


def _uids(n: int, rng: np.random.Generator) -> np.ndarray:
    codes = _B62[rng.integers(0, 62, size=(n, 17))]
    out = np.empty((n, 18), dtype=np.uint8)
    out[:, 0] = ord("C")
    out[:, 1:] = codes
    return out.view("S18").ravel().astype(str)


def _shift_hosts(addrs: pa.ChunkedArray, offsets: np.ndarray) -> np.ndarray:
    """Move each IPv4 address's last octet by an offset (IPv6 and unset unchanged)."""
    s = np.asarray(addrs.to_numpy(zero_copy_only=False), dtype=object)
    parts = pc.split_pattern(addrs, ".", max_splits=3)
    lens = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    v4 = lens == 4
    if not v4.any():
        return s
    idx = np.flatnonzero(v4)
    flat = pc.list_flatten(pc.filter(parts, pa.array(v4))).to_numpy(zero_copy_only=False)
    quads = flat.reshape(-1, 4)
    last = quads[:, 3].astype(np.int64)
    new_last = (last - 1 + offsets[idx]) % 254 + 1
    prefix = np.char.add(np.char.add(np.char.add(quads[:, 0], "."), np.char.add(quads[:, 1], ".")),
                         np.char.add(quads[:, 2], "."))  # fmt: skip
    s[idx] = np.char.add(prefix, new_last.astype(str))
    return s


def generate(out: Path, rows: int, seed: int = 1, rate: float = 1000.0) -> int:
    rng = np.random.default_rng(seed)
    pool = pa.concat_tables([_raw_rows(DATA / s) for s in SOURCES if (DATA / s).exists()])
    pick = rng.integers(0, pool.num_rows, size=rows)
    t = pool.take(pa.array(pick))
    start = 1_700_000_000.0
    ts = start + np.cumsum(rng.exponential(1.0 / rate, size=rows))
    cols = {f: t.column(f).to_numpy(zero_copy_only=False).astype(object) for f in FIELDS}
    cols["ts"] = np.char.mod("%.6f", ts)
    cols["uid"] = _uids(rows, rng)
    cols["id.orig_h"] = _shift_hosts(t.column("id.orig_h"), rng.integers(0, 8, size=rows))
    cols["id.resp_h"] = _shift_hosts(t.column("id.resp_h"), rng.integers(0, 200, size=rows))
    table = pa.table({f: pa.array(cols[f], type=pa.string()) for f in FIELDS})
    with open(out, "wb") as f:
        f.write(b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n")
        f.write(b"#path\tconn\n#open\t2023-11-14-22-13-20\n")
        f.write(("#fields\t" + "\t".join(FIELDS) + "\n").encode())
        f.write(("#types\t" + "\t".join(TYPES) + "\n").encode())
        sink = pa.BufferOutputStream()
        pacsv.write_csv(
            table,
            sink,
            write_options=pacsv.WriteOptions(
                include_header=False, delimiter="\t", quoting_style="none"
            ),
        )
        f.write(sink.getvalue().to_pybytes())
        f.write(b"#close\t2023-11-15-01-00-00\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    n = generate(args.out, args.rows, args.seed)
    size = args.out.stat().st_size
    sys.stderr.write(
        f"wrote {n} rows, {size / 1e6:.1f} MB to {args.out} in {time.perf_counter() - t0:.1f} s\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
