"""One reader for every input file (inputs.py): a FIFO, a device or a folder where a file is read is
refused before a byte is read (a FIFO named like an image or a config used to block a run forever),
and no module of siamdyn opens a user's file for reading any other way."""
import ast
import os
import pathlib

import pytest

from siamdyn.errors import SiamdynError
from siamdyn.inputs import NotRegularFile, open_input

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "siamdyn"
# The one read that is not a user's file: the kernel's CPU description (a regular file in procfs).
ALLOWED = {("hardware.py", "/proc/cpuinfo")}


def test_special_files_are_refused_before_anything_is_read(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)  # opening it for reading without a writer would block
    for path, kind in ((fifo, "a FIFO"), ("/dev/zero", "a character device"), (tmp_path, "a folder")):
        with pytest.raises(NotRegularFile, match=f"is {kind}.*not a regular file") as info:
            open_input(path, "rb")
        assert isinstance(info.value, SiamdynError) and isinstance(info.value, OSError)
    (tmp_path / "ok.txt").write_text("fine")
    os.symlink(tmp_path / "ok.txt", tmp_path / "link.txt")  # a link to a regular file is read as the file
    with open_input(tmp_path / "link.txt") as f:
        assert f.read() == "fine"
    with pytest.raises(ValueError, match="reads"):
        open_input(tmp_path / "ok.txt", "w")


def _reads_with_open(tree: ast.AST):
    """The calls `open(...)` whose mode (second argument or mode=) is absent or a read mode, but for
    open_input's own (its opener refuses special files)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open" and not any(
                k.arg == "opener" and isinstance(k.value, ast.Name) and k.value.id == "_regular_only"
                for k in node.keywords):  # open_input's own open, through the regular-file opener
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                None)
            text = mode.value if isinstance(mode, ast.Constant) else "r" if mode is None else "?"
            if not any(c in text for c in "wax+"):
                first = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else "?"
                yield node.lineno, first


def test_no_module_reads_a_file_except_through_open_input():
    found = [(path.relative_to(SRC).as_posix(), line, first) for path in sorted(SRC.rglob("*.py"))
             for line, first in _reads_with_open(ast.parse(path.read_text()))]
    assert found and all(isinstance(f[1], int) for f in found)  # the walk sees the allowed read at least
    assert [(p, f) for p, _, f in found if (p, f) not in ALLOWED] == [], found
