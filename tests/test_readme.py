"""The README's examples print what the README shows.

Every fenced block that starts with ``$ einderive ...`` is run, and each line the
README shows must be a line of the output, in order; ``...`` in a shown line stands
for text left out (the line's visible pieces must appear in it, in order). The block
after "The first prints" is the output of the first install command's expression.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from einderive.cli import run

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[tuple[list[str], list[str]]]:
    """(argv, shown lines) of every example block."""
    blocks: list[tuple[str, list[str]]] = []  # (the prose before it, its lines)
    prose, inside = "", False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            if inside:
                blocks.append((prose, []))
                prose = ""
        elif inside:
            blocks[-1][1].append(line)
        else:
            prose += line + "\n"
    found = []
    for before, lines in blocks:
        if lines and lines[0].startswith("$ einderive "):
            found.append((shlex.split(lines[0])[2:], lines[1:]))
        elif "The first prints" in before:
            found.append((["Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"], lines))
    return found


BLOCKS = _blocks()


def _matches(shown: str, line: str) -> bool:
    if "..." not in shown:
        return shown.rstrip() == line.rstrip()
    position = 0
    for piece in (p.strip() for p in shown.split("...")):
        found = line.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def test_the_examples_are_found() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize(("argv", "shown"), BLOCKS, ids=[" ".join(a)[:40] for a, _ in BLOCKS])
def test_readme_example_prints_what_it_shows(argv: list[str], shown: list[str], capsys) -> None:
    assert run(argv) == 0
    output = capsys.readouterr().out.splitlines()
    position = 0
    for line in shown:
        while position < len(output) and not _matches(line, output[position]):
            position += 1
        assert position < len(output), f"not printed (in order): {line!r}\n" + "\n".join(output)
        position += 1
