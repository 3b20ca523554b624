"""Checks that watch the candidate from inside their own process are refused before any model call.

Check and candidate run in separate processes, so a check that patches botocore, registers botocore
event hooks or stubs a client sees only its own requests: it would fail every candidate with an
assertion that does not say why. The candidate's requests reach a check through its second parameter.
"""

from __future__ import annotations

import ast

ADVICE = (
    "a check sees the candidate's AWS requests through a second parameter: def check(candidate, aws): "
    "aws.calls() lists them, aws.on(operation, handler) shapes what the candidate meets (README: checks that see how AWS was used)"
)
_HOOKS = {"register", "register_first", "register_last", "register_before", "register_after"}
_PATCHERS = {"patch", "patch.object", "patch.dict", "Stubber", "mock.patch", "mock.patch.object", "unittest.mock.patch"}


def spying(check: ast.Module) -> list[tuple[int, str]]:
    """(line, what) for each place `check` patches botocore, hooks its events, stubs a client or mocks."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(check):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [module or ""] + [alias.name for alias in node.names]
            if any(name.split(".")[0] == "unittest" and "mock" in name or name == "mock" or name == "botocore.stub" for name in names):
                found.append((node.lineno, f"imports {module or names[1]}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and _dotted(target).split(".")[0] in ("botocore", "boto3"):
                    found.append((node.lineno, f"assigns {_dotted(target)}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = _dotted(node.func)
            if node.func.attr in _HOOKS and ".events." in f".{name}":
                found.append((node.lineno, f"registers an event hook ({name})"))
            elif name in _PATCHERS or name.endswith(".setattr") and "botocore" in ast.unparse(node):
                found.append((node.lineno, f"calls {name}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PATCHERS:
            found.append((node.lineno, f"calls {node.func.id}"))
    return sorted(set(found))


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))
