"""The package installed outside the checkout, as a robotics user gets it: a wheel (pip install --prefix, --user,
--target) and colcon's layout. The shipped files must be found there by the names the docs use, the wheel must
carry what the code opens (share files, the compiled kernels' sources) and nothing else."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from liquid_control import paths

REPO = paths.share_dir()
CONSOLE_SCRIPTS = {"liquid-control", "policy_node", "sim_node", "bag_recorder", "takeover_mux"}


def _pip(*args, cwd):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel pip builds from a copy of the checkout (a build in the checkout would leave build/ there)."""
    root = tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "install", "log", "runs", "reports", ".pytest_cache"
    )
    shutil.copytree(REPO, root / "src", ignore=ignore, symlinks=True)
    return _build_wheel(root / "src", root / "dist")


def _build_wheel(source: Path, dist: Path) -> Path:
    """pip's wheel of ``source`` (a source tree or an sdist) in ``dist``, offline, with this venv's setuptools."""
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source), cwd=dist.parent)
    (found,) = dist.glob("liquid_control-*.whl")
    return found


def _site_packages(prefix: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))


@pytest.fixture(scope="module")
def prefix_install(wheel, tmp_path_factory):
    """pip install --prefix: the share files land in <prefix>/share, which is not sys.prefix (as with --user)."""
    from importlib import metadata

    prefix = tmp_path_factory.mktemp("prefix")
    before = sorted(str(d._path) for d in metadata.distributions(name="liquid_control"))
    # --ignore-installed: without it pip uninstalls the running environment's own (editable) liquid_control first,
    # which left the test run's venv without the package and its console scripts
    _pip("install", "--no-deps", "--no-index", "--ignore-installed", "--prefix", str(prefix), str(wheel), cwd=prefix)
    assert sorted(str(d._path) for d in metadata.distributions(name="liquid_control")) == before
    return prefix


def _run_installed(code, site, cwd, **env_vars):
    """``code`` in a fresh interpreter that imports the package from ``site`` only, started outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), **env_vars)
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return proc


FIND_SHARE = """
import json, liquid_control, sim_envs
from liquid_control import paths
print(json.dumps({
    "module": liquid_control.__file__, "sim_envs": sim_envs.__file__,
    "share": str(paths.share_dir()),
    "checkout": paths.checkout_dir() and str(paths.checkout_dir()),
    "policy": str(paths.resolve_policy_file("cfc_ncp_rover.pt")),
    "policy_as_documented": str(paths.resolve_policy_file("policies/cfc_ncp_rover.pt")),
    "config_as_documented": str(paths.resolve_config_file("policies/configs/cfc_ncp_rover.yaml")),
    "config_by_name": str(paths.resolve_config_file("cfc_ncp_rover.yaml")),
}))
"""


def test_a_prefix_install_finds_its_shipped_files_by_the_documented_names(prefix_install, tmp_path):
    """pip install --prefix/--user/--target put share/liquid_control outside sys.prefix and outside any ament
    index: share_dir() raised 'cannot find the share directory', so `liquid-control main` and policy_node with
    a shipped policy failed; `policies/configs/...` (every training example) only resolved inside the checkout."""
    site = _site_packages(prefix_install)
    proc = _run_installed(FIND_SHARE, site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    share = (prefix_install / "share" / "liquid_control").resolve()
    assert Path(found["module"]).is_relative_to(site) and Path(found["sim_envs"]).is_relative_to(site)
    assert Path(found["share"]) == share
    assert found["checkout"] is None  # no git commit of the folders above to record as this code's
    assert Path(found["policy"]) == Path(found["policy_as_documented"]) == share / "policies" / "cfc_ncp_rover.pt"
    assert Path(found["config_as_documented"]) == share / "policies" / "configs" / "cfc_ncp_rover.yaml"
    assert Path(found["config_by_name"]) == share / "policies" / "configs" / "cfc_ncp_rover.yaml"


def test_the_ament_index_finds_the_share_dir_of_a_colcon_style_prefix(prefix_install, tmp_path):
    """colcon's install/<pkg> is a prefix with the ament index marker; with the RECORD gone (an egg-info install)
    the index is what finds share/liquid_control."""
    site = _site_packages(prefix_install)
    copy = tmp_path / "prefix"
    shutil.copytree(prefix_install, copy)
    site_copy = _site_packages(copy)
    for record in site_copy.glob("liquid_control-*.dist-info/RECORD"):
        record.unlink()
    proc = _run_installed(FIND_SHARE, site_copy, tmp_path, AMENT_PREFIX_PATH=str(copy))
    assert proc.returncode == 0, proc.stderr
    assert Path(json.loads(proc.stdout)["share"]) == (copy / "share" / "liquid_control").resolve()
    assert site != site_copy


def test_a_missing_share_dir_is_an_error_naming_where_it_looked(prefix_install, tmp_path):
    copy = tmp_path / "prefix"
    shutil.copytree(prefix_install, copy)
    shutil.rmtree(copy / "share" / "liquid_control")
    proc = _run_installed("from liquid_control import paths; paths.share_dir()", _site_packages(copy), tmp_path)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert "cannot find the share directory of liquid_control (launch/, config/, policies/)" in message
    assert "ament index" in message and "reinstall the package" in message


def test_a_missing_config_names_the_shipped_folder(prefix_install, tmp_path):
    code = "from liquid_control import paths; paths.resolve_config_file('policies/configs/cfc_ncp_rovr.yaml')"
    proc = _run_installed(code, _site_packages(prefix_install), tmp_path)
    share = (prefix_install / "share" / "liquid_control").resolve()
    assert "FileNotFoundError: policy config 'policies/configs/cfc_ncp_rovr.yaml': no such file" in proc.stderr
    configs = share / "policies" / "configs"
    assert f"nor a shipped config {configs}/policies/configs/cfc_ncp_rovr.yaml or {configs}/cfc_ncp_rovr.yaml)" in (
        proc.stderr
    )


def test_the_checkout_is_where_package_xml_sits_beside_the_package():
    assert paths.checkout_dir() == Path(paths.__file__).resolve().parent.parent == paths.share_dir()


def test_only_the_docs_shipped_paths_are_looked_up_in_the_share_dir(tmp_path, monkeypatch):
    """`runs/...` names the working directory's runs, never the checkout's (share_dir() is the checkout here)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as missing:
        paths.resolve_policy_file("runs/robot/policy.pt")
    assert str(paths.share_dir() / "runs") not in str(missing.value)
    with pytest.raises(FileNotFoundError) as missing:  # configs looked in share/runs/... before, policies never did
        paths.resolve_config_file("runs/robot/config.yaml")
    assert str(paths.share_dir() / "runs") not in str(missing.value)


def test_every_console_script_is_installed_and_imports(prefix_install, tmp_path):
    """The executables docs/ros.md and the README name (ros2 run liquid_control <name>, liquid-control)."""
    code = """
import json
from importlib import metadata
scripts = {ep.name: ep.value for ep in metadata.distribution("liquid_control").entry_points
           if ep.group == "console_scripts"}
for ep in metadata.distribution("liquid_control").entry_points:
    assert callable(ep.load()), ep
print(json.dumps(scripts))
"""
    proc = _run_installed(code, _site_packages(prefix_install), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == CONSOLE_SCRIPTS
    for name in CONSOLE_SCRIPTS:
        assert os.access(prefix_install / "bin" / name, os.X_OK), name


def test_the_wheel_carries_the_share_files_and_kernel_sources_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"liquid_control-{wheel.name.split('-')[1]}.data/data/"
    share = data + "share/liquid_control/"
    expected = {
        data + "share/ament_index/resource_index/packages/liquid_control",
        share + "package.xml",
        *(share + p.relative_to(REPO).as_posix() for p in (REPO / "launch").glob("*.launch.py")),
        *(share + p.relative_to(REPO).as_posix() for p in (REPO / "config").glob("*.yaml")),
        *(share + p.relative_to(REPO).as_posix() for p in (REPO / "urdf").glob("*.urdf")),
        *(share + p.relative_to(REPO).as_posix() for p in (REPO / "policies").rglob("*") if p.is_file()),
    }
    assert {share + "policies/cfc_ncp_rover.onnx", share + "policies/configs/cfc_ncp_rover.yaml"} <= expected
    assert expected <= names, sorted(expected - names)
    assert not {n for n in names if n.startswith(data)} - expected  # nothing else under share/
    native = REPO / "liquid_control" / "cells" / "native"
    kernel_sources = {
        f"liquid_control/cells/native/{p.name}" for p in native.iterdir() if p.suffix in (".c", ".h", ".inc")
    }
    assert "liquid_control/cells/native/kernels.c" in kernel_sources and kernel_sources <= names
    top_level = {n.split("/")[0] for n in names} - {data.split("/")[0]}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"liquid_control", "sim_envs"}
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".so"))]
    assert wheel.stat().st_size < 8 * 2**20  # the policies and their exports: ~1.8 MB


def test_the_sdist_carries_the_pins_and_builds_the_same_wheel(wheel, tmp_path):
    """setup.py leaves the runtime dependencies to requirements.txt, which the sdist lacked; it carried test/test*.py
    without the conftest, pytest.ini and checkout they need."""
    src = wheel.parent.parent / "src"
    setup = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "sdist")],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert setup.returncode == 0, setup.stderr
    (sdist,) = (tmp_path / "sdist").glob("liquid_control-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"requirements.txt", "package.xml", "resource/liquid_control", "setup.cfg"} <= names
    assert {"liquid_control/cells/native/kernels.c", "policies/configs/cfc_ncp_rover.yaml"} <= names
    assert not [n for n in names if n.startswith(("test/", "runs/", "docs/", ".venv/"))]
    from_sdist = _build_wheel(sdist, tmp_path / "dist")
    assert set(zipfile.ZipFile(from_sdist).namelist()) == set(zipfile.ZipFile(wheel).namelist())


def _imported_top_level_modules(folder: Path) -> set[str]:
    modules = set()
    for file in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


# rosdep keys of the Python packages the code imports (ros/rosdistro rosdep/python.yaml); onnx and mcap have none
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "cv2": "python3-opencv",
    "torch": "python3-pytorch-pip",
    "mujoco": "python3-mujoco-pip",
    "gymnasium": "python3-gymnasium-pip",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "PIL": "python3-pil",
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
}
ROS_PACKAGE_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
ROS_PYTHON_PACKAGES = {"rclpy", "launch", "launch_ros", "ament_index_python"}


def test_package_xml_names_every_ros_package_and_rosdep_key_the_code_imports():
    """rosdep installs what package.xml names: rcl_interfaces and builtin_interfaces (imported by the nodes) and the
    Python packages tqdm, matplotlib, PIL, onnxruntime (the robot's default backend) and rosbags (bag_recorder)
    were missing."""
    root = ET.parse(REPO / "package.xml").getroot()
    exec_depends = {e.text for e in root.findall("exec_depend")}
    imported = _imported_top_level_modules(REPO / "liquid_control") | _imported_top_level_modules(REPO / "sim_envs")
    imported |= _imported_top_level_modules(REPO / "launch")
    ros = {m for m in imported if m.endswith(ROS_PACKAGE_SUFFIXES) or m in ROS_PYTHON_PACKAGES}
    assert {"rclpy", "rcl_interfaces", "builtin_interfaces", "sensor_msgs"} <= ros
    assert sorted(ros - exec_depends) == []
    python = {ROSDEP_KEYS[m] for m in imported if m in ROSDEP_KEYS}
    assert sorted(python - exec_depends) == []
    pinned = {line.split("==")[0].lower() for line in (REPO / "requirements.txt").read_text().splitlines()}
    assert {"onnx", "mcap"} <= pinned  # the two without a rosdep key come from requirements.txt


def test_one_version_for_setup_py_and_package_xml():
    from liquid_control import __version__

    setup_py = (REPO / "setup.py").read_text()
    assert f'version="{__version__}"' in setup_py
    assert ET.parse(REPO / "package.xml").getroot().findtext("version") == __version__


def test_train_and_eval_take_shipped_files_by_the_docs_names_from_any_folder(tmp_path, monkeypatch):
    """Before: `train --config policies/configs/cfc_ncp_rover.yaml` and `eval --policy r=policies/cfc_ncp_rover.pt`
    worked only with the checkout as the working directory ("policy config not found", "does not exist"), so not
    from an installed package; the docs' names now resolve to the shipped files there too."""
    from types import SimpleNamespace

    from liquid_control import cli
    from liquid_control.evaluation.plan import EvaluationSetupError, build_plan
    from liquid_control.training import trainer

    monkeypatch.chdir(tmp_path)
    asked = {}

    def fake_train(config, out, **kwargs):
        asked["config"] = config
        return SimpleNamespace(success=None, policy_path=out, epochs=0, wall_s=0.0)

    monkeypatch.setattr(trainer, "train", fake_train)
    assert cli.main(["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--out", str(tmp_path / "run")]) == 0
    assert Path(asked["config"]) == paths.policies_dir() / "configs" / "cfc_ncp_rover.yaml"
    plan = build_plan(["r=policies/cfc_ncp_rover.pt"], ["in_distribution"], 1)
    assert plan.policies[0].checkpoints == (str(paths.policies_dir() / "cfc_ncp_rover.pt"),)
    with pytest.raises(EvaluationSetupError, match="checkpoint 'policies/nope.pt' does not exist"):
        build_plan(["r=policies/nope.pt"], ["in_distribution"], 1)
    (tmp_path / "policies").mkdir()  # a file of the working directory wins over the shipped one of that name
    (tmp_path / "policies" / "cfc_ncp_rover.pt").write_bytes((paths.policies_dir() / "cfc_rover.pt").read_bytes())
    plan = build_plan(["r=policies/cfc_ncp_rover.pt"], ["in_distribution"], 1)
    assert plan.policies[0].checkpoints == (str(tmp_path / "policies" / "cfc_ncp_rover.pt"),)


def test_train_takes_shipped_files_by_the_docs_names_from_python_and_init_from(tmp_path, monkeypatch, capsys):
    """Before: training.md's `train("policies/configs/cfc_ncp_rover.yaml", ...)` from Python said "policy config not
    found" outside the checkout, and `train --init-from policies/cfc_ncp_rover.pt` (fine-tune the shipped policy on
    your bags) "policy file not found", where eval, export and sim take those names from any folder."""
    from liquid_control import cli
    from liquid_control.policy import PolicyConfigError
    from liquid_control.training import TrainingError, train

    monkeypatch.chdir(tmp_path)
    shipped = paths.policies_dir() / "cfc_ncp_rover.pt"
    # both files found: the warm start's check of the network is what refuses (a CfC config, a CfC-NCP policy)
    with pytest.raises(TrainingError, match=f"--init-from {re.escape(str(shipped))}: a policy of another network"):
        train("policies/configs/cfc_rover.yaml", tmp_path / "run", init_from="policies/cfc_ncp_rover.pt")
    assert f"policies/cfc_ncp_rover.pt is not in {tmp_path}: the shipped {shipped}" in capsys.readouterr().err
    command = ["train", "--config", "policies/configs/cfc_rover.yaml", "--out", str(tmp_path / "run")]
    assert cli.main([*command, "--init-from", "policies/cfc_ncp_rover.pt"]) == 2
    assert f"error: --init-from {shipped}: a policy of another network" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(PolicyConfigError, match=r"'policies/configs/nope\.yaml': no such file .*nor a shipped config"):
        train("policies/configs/nope.yaml", tmp_path / "run")
    from liquid_control.training.trainer import check_resume

    check_resume("policies/configs/cfc_rover.yaml", tmp_path / "run")  # the same names as train(): nothing to refuse
    (tmp_path / "policies").mkdir()  # a file of the working directory wins over the shipped one of that name
    (tmp_path / "policies" / "cfc_ncp_rover.pt").write_bytes(b"")
    with pytest.raises(TrainingError, match="--init-from policies/cfc_ncp_rover.pt: .*empty"):
        train("policies/configs/cfc_rover.yaml", tmp_path / "run", init_from="policies/cfc_ncp_rover.pt")


def test_an_installed_package_records_its_version_not_the_git_commit_of_a_repository_around_it(monkeypatch):
    """Before: provenance ran git three folders above the package, so a venv inside a user's repository recorded
    that repository's commit as the code's."""
    from liquid_control.evaluation import provenance

    assert provenance.code_commit() != "unknown"  # the checkout's commit here
    monkeypatch.setattr(paths, "checkout_dir", lambda: None)
    assert paths._git("rev-parse", "HEAD") is None
    assert provenance.code_commit().startswith("installed liquid_control ")


def test_model_card_asks_for_out_when_installed_instead_of_writing_into_the_installed_share(monkeypatch, capsys):
    """Before: shipping a card from an installed package wrote policies/<name>.pt and .md into the installed share
    (root-owned or read-only after a colcon or system install); the checkout keeps its default."""
    from liquid_control.training import model_card

    monkeypatch.setattr(model_card, "checkout_dir", lambda: None)
    with pytest.raises(SystemExit) as stop:
        model_card.main(["--refresh", "cfc_ncp_rover"])
    assert stop.value.code == 2
    assert "--out is required outside a source checkout" in capsys.readouterr().err


def test_eval_says_when_it_takes_the_shipped_file_for_a_name_not_in_the_working_directory(
    tmp_path, monkeypatch, capsys
):
    """Review finding: `eval --policy mine=policies/cfc_ncp_rover.pt` from another folder now evaluates the shipped
    file; it says so, as a user who meant a file of their own would want to know."""
    from liquid_control.evaluation.plan import build_plan

    monkeypatch.chdir(tmp_path)
    build_plan(["mine=policies/cfc_ncp_rover.pt"], ["in_distribution"], 1)
    assert (
        f"policies/cfc_ncp_rover.pt is not in {tmp_path}: the shipped {paths.policies_dir()}" in capsys.readouterr().err
    )


def test_a_shipped_file_named_without_its_suffix_is_refused_with_its_name(tmp_path, monkeypatch):
    """Before: `eval --policy cfc_ncp_rover`, `sim --policy cfc_ncp_rover` and `train --config cfc_ncp_rover` (the
    names the docs list, without .pt / .yaml) said only that no such file exists; the refusal now names the file."""
    from liquid_control.evaluation.plan import EvaluationSetupError, build_plan

    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        EvaluationSetupError, match=r"'cfc_ncp_rover' does not exist .*; did you mean cfc_ncp_rover\.pt\?$"
    ):
        build_plan(["cfc_ncp_rover"], ["in_distribution"], 1)
    with pytest.raises(FileNotFoundError, match=r"; did you mean policies/ltc_ncp_rover\.pt\?$"):
        paths.resolve_policy_file("policies/ltc_ncp_rover")
    with pytest.raises(FileNotFoundError, match=r"; did you mean cfc_ncp_rover\.yaml\?$"):
        paths.resolve_config_file("cfc_ncp_rover")
    for name in ("nope", "cfc_ncp_rover.yaml", str(tmp_path / "cfc_ncp_rover")):  # no shipped file by that name
        with pytest.raises(FileNotFoundError) as refused:
            paths.resolve_policy_file(name)
        assert "did you mean" not in str(refused.value)


def test_export_takes_a_shipped_policy_by_the_docs_name_from_any_folder_and_writes_here(tmp_path, monkeypatch, capsys):
    """Before: `liquid-control export policies/cfc_ncp_rover.pt -o deploy/rover.onnx` (its own --help example) said
    "policy file not found" outside the checkout, which eval, sim and policy_node take from any folder; the export
    lands in the working directory, never beside the shipped file."""
    from liquid_control import cli

    monkeypatch.chdir(tmp_path)
    shipped = sorted(paths.policies_dir().iterdir())
    assert cli.main(["export", "policies/cfc_rover.pt"]) == 0
    assert (tmp_path / "policies" / "cfc_rover.onnx").is_file() and sorted(paths.policies_dir().iterdir()) == shipped
    err = capsys.readouterr().err
    assert f"policies/cfc_rover.pt is not in {tmp_path}: the shipped {paths.policies_dir() / 'cfc_rover.pt'}" in err
    # the docs' name there now finds that export: run as the policy (with torch too: no checkpoint beside it)
    from liquid_control.runtime.backends import OnnxBackend, load_backend

    assert isinstance(load_backend(paths.resolve_policy_file("policies/cfc_rover.pt")), OnnxBackend)
    assert cli.main(["export", "cfc_rover"]) == 2
    assert capsys.readouterr().err.endswith("cfc_rover: policy file not found; did you mean cfc_rover.pt?\n")
    (tmp_path / "cfc_rover").mkdir()  # a folder of that name: no hint for a name that is there
    assert cli.main(["export", "cfc_rover"]) == 2
    assert "did you mean cfc_rover.pt" not in capsys.readouterr().err
    # a path out of the working directory is never taken for a shipped file (was: policies/../policies/x.pt)
    assert paths.shipped_policy_for("../policies/cfc_rover.pt") is None
