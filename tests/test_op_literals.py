"""No stage dispatches on an op's name: everything about an op lives in its definition.

The test parses every module of the package with `ast` and fails on any
string constant equal to the name of a registered built-in op ("conv",
"concat", "flatten", ...) outside the op definitions.  A consumer that needs
to know something about an op asks its `OpDef` (`category`, `paper`,
`channels`, `channel_ranges`, `counted`, `join_name`, ...), so a new op is
one `register(...)` call and nothing else has to learn its name.

What counts as an op definition:

- all of `archcompiler/ops.py` (or, once split, the package `archcompiler/ops/`):
  the argument models, the helpers the definitions use, the drawing
  categories (`CATEGORIES`) and every `register(OpDef(...))` call;
- the spec language's keyword definitions, which are where a container
  keyword or option may share its spelling with an op (the `concat` and
  `add` containers make the `concat` and `add` joins; `identity` is both a
  pass-through branch and an op; `scale` a residual option and an op):
  the module-level assignments to the names in `KEYWORD_DEFINITIONS` in
  `archcompiler/spec.py`.  Everything else refers to those constants
  (`spec.CONCAT`, `spec.BRANCHING_CONTAINERS`, `spec.PASS_THROUGH`) or to the
  registry (`ops.join_op(container)`).

Text that merely contains an op name ("conv 3x3/2", a docstring) is not an
equal constant and is allowed; so are attribute and keyword-argument names.
"""

from __future__ import annotations

import ast
from pathlib import Path

from archcompiler.ops import OPS

PACKAGE = Path(__file__).resolve().parents[1] / "archcompiler"
KEYWORD_DEFINITIONS = {"spec.py": {"CONTAINER_KEYS", "CONTAINER_OPTIONS", "PASS_THROUGH"}}


def _is_definition(rel: str) -> bool:
    return rel == "ops.py" or rel.startswith("ops/")


def _exempt_lines(rel: str, tree: ast.Module) -> set[int]:
    """Lines of the module-level keyword definitions of `rel`."""
    names = KEYWORD_DEFINITIONS.get(rel, set())
    lines: set[int] = set()
    for stmt in tree.body:
        targets = (stmt.targets if isinstance(stmt, ast.Assign)
                   else [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id in names for t in targets):
            lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    return lines


def op_literals(names: set[str]) -> list[str]:
    """`path:line: 'name'` for every op-name string constant outside the op definitions."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if _is_definition(rel):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        exempt = _exempt_lines(rel, tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and node.lineno not in exempt):
                found.append(f"archcompiler/{rel}:{node.lineno}: {node.value!r}")
    return sorted(found)


def builtin_ops() -> set[str]:
    return {name for name, op in OPS.items() if op.origin is None}


def test_no_op_name_literal_outside_the_op_definitions():
    found = op_literals(builtin_ops())
    assert not found, ("op names spelled outside the op definitions; ask the op's OpDef instead "
                       "(see this test's docstring):\n" + "\n".join(found))


def test_the_scan_sees_literals():
    # The scan is not vacuous: the definitions themselves spell every built-in op's name.
    spelled = set()
    for path in [PACKAGE / "ops.py", *sorted((PACKAGE / "ops").rglob("*.py"))]:
        if path.exists():
            spelled |= {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                        if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"conv", "concat", "add", "flatten", "linear", "rbf"} <= spelled
    assert builtin_ops() <= spelled | set(_activation_names())


def _activation_names() -> list[str]:
    from archcompiler.ops import ACTIVATIONS

    return list(ACTIVATIONS)


def test_keyword_definitions_are_the_only_keyword_literals():
    from archcompiler import spec

    assert spec.CONCAT in OPS and spec.ADD in OPS  # why the exemption exists at all
    tree = ast.parse((PACKAGE / "spec.py").read_text(encoding="utf-8"))
    assert _exempt_lines("spec.py", tree), "spec.py no longer defines its keywords where this test looks"
