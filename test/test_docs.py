"""The docs say what the code does: documented exports exist, documented configs are the shipped ones, and
documented commands do not overwrite shipped files. (README's commands run in test_readme_commands.py.)"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def section(path: str, heading: str) -> str:
    text = (ROOT / path).read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end > 0 else None]


def test_runtime_exports_what_architecture_documents_without_loading_torch_or_ros():
    documented = set(
        re.findall(
            r"`(?:from liquid_control\.runtime import )?([A-Z]\w+|load_backend|export_onnx)\b",
            section("docs/ARCHITECTURE.md", "## Runtime"),
        )
    )
    documented |= set(re.findall(r"\b([A-Z][A-Za-z]+)\(", section("docs/ARCHITECTURE.md", "## Runtime")))
    assert {
        "PolicyRunner",
        "RunnerLimits",
        "load_backend",
        "TorchBackend",
        "OnnxBackend",
        "CommandLimiter",
    } <= documented
    code = (
        "import sys, liquid_control.runtime as r; "
        f"missing = [n for n in {sorted(documented)!r} if not hasattr(r, n)]; "
        "print(missing, 'torch' in sys.modules, 'rclpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] False False", out


def _yaml_blocks(path: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", (ROOT / path).read_text(), flags=re.S | re.M)


def test_documented_rover_config_is_the_shipped_one():
    shipped = yaml.safe_load((ROOT / "policies" / "configs" / "cfc_ncp_rover.yaml").read_text())
    for path in ("docs/ARCHITECTURE.md", "docs/training.md"):
        (block,) = [b for b in _yaml_blocks(path) if "name: cfc_ncp_rover" in b]
        doc = yaml.safe_load(block.replace("{...}", "{}").replace(", ...}", "}"))  # elisions of the docs
        assert doc["observation"] == shipped["observation"], path
        assert {k: shipped["core"][k] for k in doc["core"]} == doc["core"], path
        for key, value in doc["encoder"].items():
            assert shipped["encoder"][key] == value, path


def test_documented_model_card_command_writes_outside_the_shipped_policies():
    text = (ROOT / "docs" / "training.md").read_text().replace("\\\n", " ")
    commands = [
        line for line in text.splitlines() if line.strip().startswith("python -m liquid_control.training.model_card")
    ]
    assert commands
    for command in commands:
        argv = shlex.split(command.strip())
        assert "--out" in argv, command
        out = Path(argv[argv.index("--out") + 1])
        assert out.parts[0] != "policies" and not str(out).startswith(str(ROOT / "policies")), command


def test_public_names_of_the_ros_robot_modules_have_docstrings():
    """The modules of the ROS-robot work (robot description, viewer, CLI): every public class, function and
    method says what it is for (ruff's D101-D103 are not yet on for the whole package)."""
    import ast

    missing = []
    for path in ("liquid_control/ros/robot_description.py", "liquid_control/ros/view.py", "liquid_control/cli.py"):
        tree = ast.parse((ROOT / path).read_text())
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            defs = [node] + [
                n
                for n in (node.body if isinstance(node, ast.ClassDef) else [])
                if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
            ]
            missing += [f"{path}: {d.name}" for d in defs if ast.get_docstring(d) is None]
    assert not missing, missing


def test_sections_quoted_beside_a_link_exist_in_the_linked_doc():
    """``[x.md](x.md), "Some section"`` sends the reader to text of x.md: training.md's sun recipe cited the
    measurements of a "Sun-direction randomisation" that robustness.md never had."""
    quoted = re.compile(r'\[[^\]]+\]\(([^)#:]+\.md)\),? "([^"]+)"')
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target, name in quoted.findall(doc.read_text()):
            path = doc.parent / target
            if path.is_file() and name not in path.read_text():
                missing.append(f"{doc.relative_to(ROOT)}: {target}, {name!r}")
    assert not missing


def test_every_relative_link_and_figure_of_the_docs_is_a_committed_file():
    """A reader following README.md into docs/ meets only files that exist: ten committed reports (max_step/,
    recipe_ablation/, fusion_report/copycat/ and sweep/, ood_report_shipped/balancer/) embedded 16 figures that
    were never committed (saliency grids, example episodes, sensor-timing plots), broken images on every viewer."""
    tracked = set(
        subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    )
    link = re.compile(r"\]\(([^)\s]+)\)")
    missing = []
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for doc in [*pages, *sorted((ROOT / "policies").glob("*.md"))]:
        for target in link.findall(re.sub(r"`[^`\n]*`", "", doc.read_text())):
            path = target.partition("#")[0]
            if not path or re.match(r"[a-z]+:", path):  # an anchor of the page itself, a web address
                continue
            resolved = (doc.parent / path).resolve()
            name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(resolved)
            if not (name in tracked or any(t.startswith(name.rstrip("/") + "/") for t in tracked)):
                missing.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not missing, missing
