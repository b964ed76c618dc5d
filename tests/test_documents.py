"""The documents a user has stand on their own: the README, the notebook, ``einderive
table`` and its ``--help``, and every docstring name no file the package does not ship
(the project's own working notes), and the cheat sheet ``table`` checks is package data."""

from __future__ import annotations

import ast
import json
import re
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from einderive import table
from einderive.cli import run

REPOSITORY = Path(__file__).resolve().parent.parent
# what only the project's working notes define
UNSHIPPED = re.compile(
    r"\bCONTRACT\b|(?i:seed thread|seed table|seed notes|seeds/|shared/|-notes\.txt)"
)


def _docstrings() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPOSITORY / "einderive").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                docstring = ast.get_docstring(node)
                if docstring:
                    found.append((f"{path.name}:{getattr(node, 'name', '<module>')}", docstring))
    return found


def test_docstrings_name_nothing_unshipped() -> None:
    offending = [name for name, text in _docstrings() if UNSHIPPED.search(text)]
    assert offending == []


def test_readme_names_nothing_unshipped_and_defines_the_generic_call() -> None:
    readme = (REPOSITORY / "README.md").read_text()
    assert UNSHIPPED.findall(readme) == []
    assert "### The generic convolution" in readme
    assert "out[b, o, i] = sum_{c, m} w[o, c, m] * x'[b, c, s*i + d*m]" in readme


def test_notebook_stands_on_its_own() -> None:
    notebook = json.loads((REPOSITORY / "examples" / "walkthrough.ipynb").read_text())
    for cell in notebook["cells"]:
        text = "".join(cell["source"])
        assert not UNSHIPPED.search(text), text
        assert not re.search(r"\bseed\b|\bthe thread\b|\bnotes\b", text, re.I), text


def test_table_help_defines_the_generic_convolution(capsys) -> None:
    with pytest.raises(SystemExit):
        run(["table", "--help"])
    text = capsys.readouterr().out
    assert not UNSHIPPED.search(text)
    assert "conv(x, w, padding=(lo, hi), stride=s, dilation=d, fill=f," in text
    assert "out[b, o, i] = sum_{c, m} w[o, c, m] * x'[b, c, s*i + d*m]" in text
    assert "fill            puts f - 1 zeros between neighbouring samples" in text


def test_the_cheat_sheet_is_package_data() -> None:
    sheet = resources.files("einderive").joinpath(table.CHEAT_SHEET)
    assert sheet.is_file()
    rows = table.cheat_sheet()
    assert list(rows) == [family.description for family in table.FAMILIES]
    strided = rows["Strided Convolution, No Padding"].x_cot
    assert strided["padding"] == ("K-1", "K-1 + (N+K)%s") and strided["fill"] == "s"


def test_the_wheel_ships_the_cheat_sheet_and_the_grammar(tmp_path) -> None:
    builder = pytest.importorskip("hatchling.builders.wheel")
    wheel = builder.WheelBuilder(str(REPOSITORY))
    (built,) = list(wheel.build(directory=str(tmp_path), versions=["standard"]))
    names = zipfile.ZipFile(built).namelist()
    assert "einderive/conv-pullback-table.txt" in names
    assert "einderive/_grammar/einderive.lark" in names
