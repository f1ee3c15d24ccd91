"""The output file under a failed run: what ``abort`` leaves is exactly the last commit.

Found by the exactly-once test once a run's notices fitted in the file object's write
buffer: the cut saw the committed size on disk, and closing the file then wrote the
buffered records behind it, so the next run repeated them.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from zeekml.sinks.files import OutputFile

HEADER = b"#separator \\x09\n#fields\tts\tuid\n"


def _committed(path: Path) -> OutputFile:
    f = OutputFile(path, lambda: HEADER, mode="append")
    f.open()
    f.flush()
    f.mark_committed()
    return f


@pytest.mark.parametrize("size", [10, io.DEFAULT_BUFFER_SIZE // 2, 5 * io.DEFAULT_BUFFER_SIZE + 7])
def test_abort_cuts_back_records_still_in_the_write_buffer(tmp_path: Path, size: int) -> None:
    """Records written after the commit, in the buffer, partly or wholly on disk: none
    of them is in the file after ``abort``."""
    out = tmp_path / "zeekml.log"
    f = _committed(out)
    f.write(b"x" * (size - 1) + b"\n")
    f.abort()
    assert out.read_bytes() == HEADER


def test_abort_keeps_what_was_committed_and_cuts_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "zeekml.log"
    f = _committed(out)
    f.write(b"1\tCa\n")
    f.flush()
    f.mark_committed()
    f.write(b"2\tCb\n")  # after the commit: cut, though the file object never flushed it
    f.abort()
    assert out.read_bytes() == HEADER + b"1\tCa\n"
    # the next run appends after the commit, as if the failed run never wrote
    g = OutputFile(out, lambda: HEADER, mode="append")
    g.write(b"2\tCb\n")
    g.close()
    assert out.read_bytes().startswith(HEADER + b"1\tCa\n") and out.read_bytes().count(b"2\tCb\n") == 1
