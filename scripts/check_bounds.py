"""The size bounds of docs/design-notes.md, checked: no module of ``src/`` over 450 lines and no
function over 80, except the data literals named here (the OpenAPI schema, the argument parser).

    python scripts/check_bounds.py            # exit 1 and name each offender
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
DATA_LITERALS = {("infaas/frontend/openapi.py", "openapi_schema"), ("infaas/cli/__init__.py", "build_parser")}


def offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            found.append(f"{rel}: {lines} lines (bound {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, rel)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (rel, node.name) not in DATA_LITERALS:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno}: {node.name} is {length} lines (bound {MAX_FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    bad = offenders(Path(__file__).resolve().parent.parent / "src")
    print("\n".join(bad) or f"bounds kept: modules <= {MAX_MODULE_LINES} lines, functions <= {MAX_FUNCTION_LINES}")
    sys.exit(1 if bad else 0)
