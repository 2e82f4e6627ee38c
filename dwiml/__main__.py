"""``python -m dwiml``: list the commands the installed package provides, with what each does."""
from __future__ import annotations

import ast
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

from dwiml import __version__


def commands() -> list[tuple[str, str]]:
    """(name, what it does) of each console script of dwiml, sorted by name: the first line of its
    module's docstring after the usage (``name ARGS``: what it does). The modules are read, not
    imported (importing torch for a listing would be slow)."""
    found = []
    for ep in entry_points(group="console_scripts"):
        if ep.module.split(".")[0] != "dwiml":
            continue
        spec = importlib.util.find_spec(ep.module)
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) if spec and spec.origin else None
        found.append((ep.name, doc.splitlines()[0].split("``: ", 1)[-1] if doc else ""))
    return sorted(found)


def main() -> None:
    listed = commands()
    width = max((len(name) for name, _ in listed), default=0)
    print(f"dwiml {__version__}: train deep-learning tractography models on diffusion MRI. Commands "
          f"(each has --help):")
    for name, doc in listed:
        print(f"  {name.ljust(width)}  {doc}")


if __name__ == "__main__":
    main()
