"""The layers of docs/ARCHITECTURE.md hold in the code: a subpackage of liquid_control imports only the layers
listed above it in the diagram, the top modules import no layer, the worlds (sim_envs) import only the runtime,
and no module imports itself in a circle when it is loaded.

Every import counts: deferred imports inside functions, ``from liquid_control import ros`` and its relative
form, and module names in strings (the tables ``importlib.import_module`` reads)."""

import ast
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("liquid_control", "sim_envs")
WORLDS = "sim_envs"
WORLDS_IMPORT = "runtime"  # the one layer the worlds import (its update timeline), ARCHITECTURE.md


def documented_layers(root: Path = ROOT) -> list[str]:
    """The layer names in the order of ARCHITECTURE.md's diagram (lowest first)."""
    text = (root / "docs" / "ARCHITECTURE.md").read_text()
    diagram = text[text.index("```") : text.index("```", text.index("```") + 3)]
    return re.findall(r"^liquid_control/(\w+)", diagram, flags=re.MULTILINE)


def documented_top_modules(root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(utilities, entry points): the modules at the top of the package that ARCHITECTURE.md names as depending
    on no layer, and those it puts above every layer."""
    text = " ".join((root / "docs" / "ARCHITECTURE.md").read_text().split())
    utilities = re.search(r"Modules at the top of the package \(`liquid_control/\*\.py`:(.*?)\) depend on no", text)
    entries = re.search(r"The command line \((.*?)\) sits above every layer", text)
    assert utilities and entries, "ARCHITECTURE.md no longer says which top modules depend on no layer"
    return set(re.findall(r"`(\w+)`", utilities.group(1))), set(re.findall(r"`(\w+)`", entries.group(1)))


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of liquid_control and sim_envs."""
    found = {}
    for top in TOP:
        for path in sorted((root / top).rglob("*.py")):
            found[".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def _known(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module (``pkg.mod.func`` -> ``pkg.mod``)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or None


def _imports(node: ast.AST, name: str, path: Path) -> list[str]:
    """The dotted names an import statement (or a string naming a module, ``module:attr``) refers to."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level:
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([module] if module else []))
        return [module] + [f"{module}.{alias.name}" for alias in node.names]  # `from pkg import submodule`
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value.split(":")[0]] if re.fullmatch(r"[\w.]+(:\w+)?", node.value) else []
    return []


def references(known: dict[str, Path], loading_only: bool = False):
    """(module, line, imported module) of every reference between modules, a module's own packages left out
    (they are loaded before it). ``loading_only``: only the imports that run when the module is loaded (its body,
    not functions nor ``if TYPE_CHECKING``), each with the packages it loads on the way."""
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = _loading_imports(tree.body) if loading_only else ast.walk(tree)
        for node in nodes:
            for target in filter(None, (_known(t, known) for t in _imports(node, name, path))):
                parts = target.split(".")
                chain = [".".join(parts[:k]) for k in range(1, len(parts) + 1)] if loading_only else [target]
                for module in chain:
                    if module != name and not name.startswith(module + ".") and module in known:
                        yield name, node.lineno, module


def _loading_imports(body: list[ast.stmt]):
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        elif isinstance(stmt, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(stmt.test):
                yield from _loading_imports(stmt.body)
            yield from _loading_imports(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, *(h.body for h in stmt.handlers), stmt.orelse, stmt.finalbody):
                yield from _loading_imports(block)
        elif isinstance(stmt, (ast.With, ast.ClassDef)):
            yield from _loading_imports(stmt.body)


def violations(root: Path = ROOT, layers: list[str] | None = None) -> list[str]:
    """Every reference that goes against the rules of ARCHITECTURE.md, as 'file:line (group) imports module'."""
    layers = documented_layers(root) if layers is None else layers
    utilities, entries = documented_top_modules(root)
    rank = {layer: i for i, layer in enumerate(layers)}

    def group(module: str) -> str:
        parts = module.split(".")
        if parts[0] == WORLDS:
            return WORLDS
        if len(parts) == 1 or parts[1] in utilities:
            return "utility"  # the package itself too: every import of a layer loads it
        return "entry" if parts[1] in entries else parts[1]

    def allowed(src: str, dst: str) -> bool:
        if src == dst or dst == "utility" or src == "entry":
            return True
        if src == "utility" or dst == "entry":
            return False
        if src == WORLDS:
            return dst == WORLDS_IMPORT
        if dst == WORLDS:
            return rank[src] > rank[WORLDS_IMPORT]
        return rank[dst] < rank[src]

    known = modules(root)
    found = []
    for name, line, module in references(known):
        src, dst = group(name), group(module)
        if src not in rank and src not in ("utility", "entry", WORLDS):
            found.append(f"{known[name].relative_to(root)}: liquid_control/{src} is no documented layer")
        elif dst not in rank and dst not in ("utility", "entry", WORLDS):
            found.append(f"{known[name].relative_to(root)}:{line} imports {module}, no documented layer")
        elif not allowed(src, dst):
            found.append(f"{known[name].relative_to(root)}:{line} ({src}) imports {module}")
    return sorted(set(found))


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """The circles of modules that import each other while they load (strongly connected components)."""
    known = modules(root)
    graph = {name: set() for name in known}
    for name, _, module in references(known, loading_only=True):
        graph[name].add(module)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_every_subpackage_is_a_documented_layer():
    subpackages = {p.parent.name for p in (ROOT / "liquid_control").glob("*/__init__.py")}
    assert subpackages == set(documented_layers()), "ARCHITECTURE.md's layer diagram and liquid_control/ differ"


def test_every_top_module_is_documented():
    utilities, entries = documented_top_modules()
    top = {p.stem for p in (ROOT / "liquid_control").glob("*.py")} - {"__init__"}
    assert top == utilities | entries, "ARCHITECTURE.md's top modules and liquid_control/*.py differ"


def test_imports_follow_the_layers():
    assert violations() == []


def test_no_module_imports_itself_in_a_circle():
    assert import_cycles() == []


def test_the_package_docstring_lists_the_layers_in_order():
    doc = ast.get_docstring(ast.parse((ROOT / "liquid_control" / "__init__.py").read_text()))
    named = [m for m in re.findall(r"``(\w+)``", doc) if m in documented_layers()]
    assert named == documented_layers(), "liquid_control/__init__.py's docstring and ARCHITECTURE.md differ"


def test_the_check_sees_an_upward_import():
    # the same scan with two layers swapped must report the imports that now point upwards
    layers = documented_layers()
    i, j = layers.index("bags"), layers.index("ros")
    swapped = layers[:i] + ["ros"] + layers[i + 1 : j] + ["bags"] + layers[j + 1 :]
    assert any("(ros) imports liquid_control.bags" in line for line in violations(layers=swapped))


@pytest.fixture
def fake_tree(tmp_path):
    """A package with the documented layers, one empty module each, and the real ARCHITECTURE.md."""
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "ARCHITECTURE.md", tmp_path / "docs")
    utilities, entries = documented_top_modules()
    for layer in documented_layers():
        (tmp_path / "liquid_control" / layer).mkdir(parents=True)
        (tmp_path / "liquid_control" / layer / "__init__.py").write_text("")
        (tmp_path / "liquid_control" / layer / "mod.py").write_text("")
    for module in utilities | entries | {"__init__"}:
        (tmp_path / "liquid_control" / f"{module}.py").write_text("")
    (tmp_path / WORLDS).mkdir()
    (tmp_path / WORLDS / "__init__.py").write_text("")
    (tmp_path / WORLDS / "world.py").write_text("from liquid_control.runtime import mod\n")
    (tmp_path / "liquid_control" / "ros" / "mod.py").write_text("import sim_envs\nfrom liquid_control import cells\n")
    assert violations(tmp_path) == [] and import_cycles(tmp_path) == []
    return tmp_path


@pytest.mark.parametrize(
    "where, source",
    [
        ("liquid_control/cells/mod.py", "from liquid_control.ros import mod"),
        ("liquid_control/cells/mod.py", "def f():\n    import liquid_control.ros.mod"),
        ("liquid_control/cells/mod.py", "from liquid_control import ros"),
        ("liquid_control/cells/mod.py", "from .. import ros"),
        ("liquid_control/cells/mod.py", "TABLE = {'node': 'liquid_control.ros.mod'}"),
        ("liquid_control/cells/mod.py", "ENTRY = 'sim_envs.world:World'"),
        ("liquid_control/runtime/mod.py", "import sim_envs"),
        ("liquid_control/stats.py", "from liquid_control.cells import mod"),
        ("liquid_control/__init__.py", "from .policy import mod"),
        ("liquid_control/ros/mod.py", "from liquid_control.cli import main"),
        ("sim_envs/world.py", "from liquid_control.training import mod"),
        ("sim_envs/world.py", "from liquid_control.cells import mod"),
    ],
)
def test_the_check_sees_each_kind_of_wrong_import(fake_tree, where, source):
    (fake_tree / where).write_text(source + "\n")
    assert [line for line in violations(fake_tree) if line.startswith(where)], source


def test_the_check_sees_an_import_circle(fake_tree):
    (fake_tree / "liquid_control" / "cells" / "a.py").write_text("from . import b\n")
    (fake_tree / "liquid_control" / "cells" / "b.py").write_text("if True:\n    from .a import x\n")
    assert import_cycles(fake_tree) == [["liquid_control.cells.a", "liquid_control.cells.b"]]
    (fake_tree / "liquid_control" / "cells" / "b.py").write_text("def f():\n    from .a import x\n")
    assert import_cycles(fake_tree) == []  # a deferred import runs after both have loaded


def test_a_directory_that_is_no_layer_is_reported(fake_tree):
    (fake_tree / "liquid_control" / "extra").mkdir()
    (fake_tree / "liquid_control" / "extra" / "__init__.py").write_text("from liquid_control.cells import mod\n")
    assert any("liquid_control/extra is no documented layer" in line for line in violations(fake_tree))


def _names_used(paths) -> set[str]:
    """Every name and attribute read in ``paths`` (and identifiers in their strings: getattr tables)."""
    used = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.rpartition(".")[2])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.update(re.findall(r"[A-Za-z_]\w*", node.value))
    return used


def test_every_function_of_the_top_modules_has_a_user():
    # the top modules exist to be shared by the layers: a function only the tests call is dead code there
    utilities, _ = documented_top_modules()
    users = [p for p in modules().values()] + [
        *ROOT.glob("*.py"),
        *(p for folder in ("scripts", "benchmarks", "launch") for p in (ROOT / folder).rglob("*.py")),
    ]
    used = _names_used(users)
    unused = [
        f"liquid_control/{module}.py:{node.lineno} {node.name}"
        for module in sorted(utilities)
        for node in ast.parse((ROOT / "liquid_control" / f"{module}.py").read_text()).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in used
    ]
    assert unused == []
