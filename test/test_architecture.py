"""The layers of docs/ARCHITECTURE.md hold in the code: a subpackage of liquid_control imports only the layers
listed above it (deferred imports inside functions included), so there is no import circle between layers."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "liquid_control"


def documented_layers() -> list[str]:
    """The layer names in the order of ARCHITECTURE.md's diagram (lowest first)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    diagram = text[text.index("```") : text.index("```", text.index("```") + 3)]
    return re.findall(r"^liquid_control/(\w+)", diagram, flags=re.MULTILINE)


def imported_modules(path: Path, package: str):
    """(line, module) of every import in a file, relative imports resolved against ``package``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module


def upward_imports(layers: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(layers)}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if len(parts) < 3 or parts[1] not in rank:
            continue
        layer = parts[1]
        package = ".".join(parts if path.name == "__init__.py" else parts[:-1]).removesuffix(".__init__")
        for line, module in imported_modules(path, package):
            target = module.split(".")
            if len(target) > 1 and target[0] == "liquid_control" and rank.get(target[1], -1) > rank[layer]:
                found.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module}")
    return found


def test_every_subpackage_is_a_documented_layer():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(documented_layers()), "ARCHITECTURE.md's layer diagram and liquid_control/ differ"


def test_imports_only_go_downwards():
    assert upward_imports(documented_layers()) == []


def test_the_check_sees_an_upward_import():
    # the same scan with two layers swapped must report the imports that now point upwards
    layers = documented_layers()
    i, j = layers.index("bags"), layers.index("ros")
    swapped = layers[:i] + ["ros"] + layers[i + 1 : j] + ["bags"] + layers[j + 1 :]
    assert any("(ros) imports liquid_control.bags" in line for line in upward_imports(swapped))
