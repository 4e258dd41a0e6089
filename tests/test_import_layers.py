"""Imports only go downward: no two parts of hiera-hf (a subpackage such as `sam2`, or a top-level module such as
`hub.py`) import each other, directly or through others, counting imports inside functions too."""

import ast
from pathlib import Path

import hiera_hf

PACKAGE = Path(hiera_hf.__file__).parent


def _part(module: str) -> str:
    """`hiera_hf.sam2.video_session` -> `sam2`, `hiera_hf.hub` -> `hub`, `hiera_hf` -> `` (the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports_between_parts() -> dict[str, set[str]]:
    """Part -> the other parts its modules import (the package's own `__init__` is left out: it imports all)."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("hiera_hf", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: package.count(".") + 2 - node.level]
                targets = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:  # `from .. import image_utils` names modules
                    targets = [f"{targets[0]}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = [node.module or ""]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("hiera_hf.") and _part(module) and _part(target) != _part(module):
                    edges.setdefault(_part(module), set()).add(_part(target))
    return edges


def test_no_import_cycles_between_parts():
    edges = _imports_between_parts()
    assert edges["hub"] >= {"conversion", "checkpoints"} and "image_utils" in edges["video_io"]  # the scan sees them

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(edges.get(path[-1], ())):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path and (found := cycle_from(start, [*path, nxt])):
                return found
        return None

    cycles = [found for part in sorted(edges) if (found := cycle_from(part, [part]))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)
