"""The runtime never imports torch: only ``zeekml/train/`` may.

Imports every runtime module and runs the CLI's ``--help`` (which loads every command
module) in a fresh interpreter, then asserts ``torch`` was not loaded. A subprocess,
because this test process may well have torch loaded by other tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zeekml

PKG = Path(zeekml.__file__).resolve().parent
#: packages that may import torch (training only)
ALLOWED = ("zeekml.train",)


def runtime_modules() -> list[str]:
    mods = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        if name.startswith(ALLOWED) or name.endswith("__main__"):
            continue
        mods.append(name)
    return mods


CHECK = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an optional extra (pyspark) missing is not torch
        failed.append(f"{name}: {exc}")
from zeekml.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
for cmd in ["summary", "score", "tail", "convert", "eval", "train", "plugins"]:
    try:
        main([cmd, "--help"])
    except SystemExit:
        pass
print("TORCH_LOADED" if "torch" in sys.modules else "TORCH_ABSENT")
print("\\n".join(failed), file=sys.stderr)
"""


def test_runtime_and_cli_do_not_import_torch():
    mods = runtime_modules()
    assert "zeekml.sources.zeek_tsv" in mods and "zeekml.cli.main" in mods
    out = subprocess.run(
        [sys.executable, "-c", CHECK, *mods], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "TORCH_ABSENT", (
        "torch was imported by the runtime or the CLI:\n" + out.stderr
    )


def test_zeekml_help_subprocess():
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys; from zeekml.cli.main import main\n"
         "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "summary" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_console_script_help():
    import shutil

    exe = shutil.which("zeekml")
    cmd = [exe] if exe else [sys.executable, "-m", "zeekml.cli.main"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "summary" in out.stdout
