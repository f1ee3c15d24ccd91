"""Build the bundled sample ``zeekml/data/sample_conn.log`` that the README's main command scores.

Source: ``../shared/data/zeek/zat-sample/conn.log``, a real Zeek conn.log (360 flows,
2013-09-15) from SuperCowPowers/zat@00a2373cd404 ``data/conn.log``, MIT licence (so it may
be redistributed with its notice; the Stratosphere captures are GPL-2.0 and are not).
The rows are copied byte for byte; the script checks that every row parses with
zeekml's reader, that the copy holds at least ``--min-rows`` flows, and writes the
licence notice beside it as ``sample_conn.log.LICENSE``.

Usage: ``python tools/make_sample.py [--out zeekml/data/sample_conn.log]``
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = (REPO / ".." / "shared" / "data" / "zeek" / "zat-sample" / "conn.log").resolve()
ORIGIN = "SuperCowPowers/zat@00a2373cd4043e535ec754c35349510091ba92f4:data/conn.log"

NOTICE = """sample_conn.log: a real Zeek conn.log (360 flows captured 2013-09-15), copied byte for
byte from {origin}
(SHA-256 {sha}). It is distributed under the MIT licence of the zat project:

MIT License

Copyright (c) SuperCowPowers LLC

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=REPO / "zeekml" / "data" / "sample_conn.log")
    ap.add_argument("--min-rows", type=int, default=300)
    args = ap.parse_args(argv)

    from zeekml.sources import SkipLog, read_table

    data = args.source.read_bytes()
    skips = SkipLog(strict=True)  # every row must parse
    flows = read_table(args.source, skips=skips)
    if len(flows) < args.min_rows:
        print(f"{args.source}: only {len(flows)} flows", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    lic = args.out.with_name(args.out.name + ".LICENSE")
    lic.write_text(NOTICE.format(origin=ORIGIN, sha=sha), encoding="utf-8")
    print(f"wrote {args.out} ({len(flows)} flows, {len(data)} bytes) and {lic.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
