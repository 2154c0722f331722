"""ament_python package: builds with `colcon build` and installs with `pip install -e .`."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "liquid_control"


def tree(src, dst_root):
    """data_files entries that mirror `src` (recursively) under share/liquid_control/<dst_root>."""
    entries = []
    for dirpath, _, files in os.walk(src):
        files = [os.path.join(dirpath, f) for f in files if not f.endswith(".pyc")]
        if files:
            rel = os.path.relpath(dirpath, src)
            dst = os.path.normpath(os.path.join("share", PACKAGE, dst_root, rel))
            entries.append((dst, files))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["liquid_control", "liquid_control.*", "sim_envs", "sim_envs.*"]),
    package_data={"liquid_control.cells.native": ["*.c", "*.h", "*.inc"]},  # compiled on first use (cache.py)
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
        ("share/" + PACKAGE + "/urdf", glob("urdf/*.urdf")),
    ]
    + tree("policies", "policies"),
    install_requires=["setuptools"],
    # Runtime dependencies are pinned in requirements.txt (installed by run.sh/test.sh or rosdep/apt on a robot).
    extras_require={"ray": ["ray==2.60.0"]},
    zip_safe=False,
    maintainer="liquid_control maintainers",
    maintainer_email="maintainers@liquid-control.dev",
    description="Liquid neural network (LTC/CfC) policies for robots, with MuJoCo worlds and ROS 2 nodes.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "liquid-control = liquid_control.cli:main",
            "policy_node = liquid_control.ros.entry:policy_node",
            "sim_node = liquid_control.ros.entry:sim_node",
            "bag_recorder = liquid_control.ros.entry:bag_recorder",
            "takeover_mux = liquid_control.ros.entry:takeover_mux",
        ],
    },
)
