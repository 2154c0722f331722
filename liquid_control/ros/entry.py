"""The node executables: ``policy_node``, ``sim_node``, ``bag_recorder`` and ``takeover_mux`` (setup.py's console
scripts, and ``python -m liquid_control.ros.entry NAME --ros-args ...`` as ``liquid-control sim`` starts them;
``python -m liquid_control.ros.policy_node`` and the other node modules come here before their imports run).

A node's imports (rclpy, MuJoCo, torch) take a second or more. A SIGINT/SIGTERM in that time, before the node's
``main`` has installed its own handlers, would print a KeyboardInterrupt traceback from deep inside an import.
Nothing exists yet that needs cleaning up, so the process ends there quietly, with status 0 as after any
requested stop.
"""

import importlib
import importlib.util
import os
import shlex
import signal
import sys
import tempfile

from liquid_control.processes import end_process_now

NODE_MODULES = {
    "policy_node": "liquid_control.ros.policy_node",
    "sim_node": "liquid_control.ros.sim_node",
    "bag_recorder": "liquid_control.ros.recorder_node",
    "takeover_mux": "liquid_control.ros.takeover_mux",
}


def _stop_before_start(_signum, _frame) -> None:
    end_process_now(0)


def honour_no_color(environ=os.environ) -> None:
    """``NO_COLOR`` (no-color.org) set and not empty: ROS log lines without colour codes, also in the processes
    started from here. rcutils colours them on a terminal unless ``RCUTILS_COLORIZED_OUTPUT`` says otherwise (one
    set explicitly wins); it reads that when rclpy loads, so this runs first."""
    if environ.get("NO_COLOR") and "RCUTILS_COLORIZED_OUTPUT" not in environ:
        environ["RCUTILS_COLORIZED_OUTPUT"] = "0"


# import name -> the distribution requirements.txt pins it as, where they differ
_DISTRIBUTIONS = {"cv2": "opencv-python-headless", "yaml": "PyYAML"}


# the simulation and training stack, which ./run.sh installs and docs/real_robot.md's robot recipe leaves out: a
# command missing one of them is told of the others missing too, not one at a time over several tries
SIMULATION_AND_TRAINING = ("torch", "mujoco", "gymnasium", "matplotlib", "tqdm", "onnx")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# optional packages requirements.txt leaves out: how to install them (the pin is requirements-test.txt's)
OPTIONAL = {"foxglove": "pip install foxglove-sdk==0.30.3; optional, for liquid-control view --foxglove"}


def simulation_stack_installed() -> bool:
    """Whether the simulator (MuJoCo) is installed here, as ./run.sh installs it; a robot installed by
    docs/real_robot.md's recipe leaves it out."""
    return _installed("mujoco")


def tf2_msgs_hint(environ=os.environ) -> str:
    """How this environment gets tf2_msgs: from a ROS installation, its apt package; in the ROS 2 wheels' venv, built
    by scripts/build_interfaces.sh, which ./run.sh runs but a robot's pip recipe does not (./run.sh would install
    the whole stack, torch included): the command itself, for this venv."""
    wheels = os.path.isfile(os.path.join(sys.prefix, "lib", "librcl.so"))
    if not wheels and environ.get("ROS_DISTRO"):
        distro = environ["ROS_DISTRO"]
        return f"a ROS installation's package: sudo apt install ros-{distro}-tf2-msgs, as rosdep install does"
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts")
    script = os.path.join(script, "build_interfaces.sh")
    if os.path.isfile(script):  # run from the source checkout: the script's own path works from any folder
        command = f"bash {shlex.quote(script)} {shlex.quote(sys.prefix)} runtime"
    else:  # an installed copy: the script is in the source it was installed from
        command = f"bash scripts/build_interfaces.sh {shlex.quote(sys.prefix)} runtime, in the liquid_control source"
    if simulation_stack_installed():
        return f"built into the environment by scripts/build_interfaces.sh, which ./run.sh and ./test.sh run: {command}"
    return f"build it into this environment with {command} (cmake and a C++ compiler, ~30 s)"


def install_hint(module: str) -> str:
    """Where a missing module comes from: its pip name in requirements.txt (ROS 2 packages from PyPI are named
    ros-<package>; tf2_msgs is built by the scripts, not a wheel: :func:`tf2_msgs_hint`)."""
    if module == "tf2_msgs":
        return tf2_msgs_hint()
    if module in OPTIONAL:
        return OPTIONAL[module]
    if module == "rclpy" or module.endswith(("_msgs", "_srvs")) or module.startswith(("rmw", "ament", "rosidl")):
        return f"pip: ros-{module.replace('_', '-')}, pinned in requirements.txt"
    return f"pip: {_DISTRIBUTIONS.get(module, module)}, pinned in requirements.txt"


def missing_package(exc: ImportError) -> str | None:
    """The installable package whose absence ``exc`` reports (``torch`` for ``torch.nn``), or, for an ImportError
    that is not a ModuleNotFoundError, the package whose copy found here fails to import (a C extension for another
    Python or ROS distribution: :func:`found_elsewhere`); None for a module of this package (a bug to show, not a
    package to install) or another ImportError."""
    top = (exc.name or "").split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) and exc.path:  # a C extension that fails to load names itself alone
        top = _top_package(exc.path) or top
    if not top or top in ("liquid_control", "sim_envs"):
        return None
    if not isinstance(exc, ModuleNotFoundError) and found_elsewhere(top) is None:
        return None
    return top


def _top_package(path: str) -> str | None:
    """The top-level package the file ``path`` belongs to, by the deepest sys.path entry it lies under (the
    current folder, on sys.path too, may hold the others)."""
    path = os.path.realpath(path)
    entries = [os.path.realpath(entry or os.curdir) for entry in sys.path]
    under = [entry for entry in entries if path.startswith(entry + os.sep)]
    if not under:
        return None
    return os.path.relpath(path, max(under, key=len)).split(os.sep)[0].split(".")[0]


def found_elsewhere(module: str, environ=os.environ) -> str | None:
    """Where Python finds the package ``module`` whose import just failed, with why that copy is not this
    environment's, or None where it is not found at all (not installed). A shell that sourced a ROS installation
    (/opt/ros/<distro>/setup.bash) puts its site-packages on PYTHONPATH, ahead of the venv's: its rclpy and message
    packages, built for that distribution's Python (3.12 for Jazzy), shadow the wheels installed here."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent that fails to import, a module set to None
        return None
    if spec is None or not (spec.origin or spec.submodule_search_locations):
        return None
    location = os.path.dirname(spec.origin) if spec.origin else next(iter(spec.submodule_search_locations))
    python = f"Python {sys.version_info.major}.{sys.version_info.minor}"
    on_path = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if any(os.path.realpath(location).startswith(os.path.realpath(p) + os.sep) for p in on_path):
        distro = f" (ROS_DISTRO={environ['ROS_DISTRO']})" if environ.get("ROS_DISTRO") else ""
        return (
            f"the one found first, {location}, comes from PYTHONPATH{distro} and is not importable by this "
            f"{python}: run it from a shell that has not sourced a ROS installation's setup.bash, or with "
            "PYTHONPATH unset"
        )
    return f"the one found, {location}, is not importable by this {python} (a broken or foreign installation)"


def needs_package(command: str, module: str, cause: ImportError | None = None, whole_stack: bool = False) -> str:
    """The one line saying that ``command`` needs the Python package ``module`` and where it comes from, or why
    the copy Python finds cannot be used; with the ImportError that ``cause`` raised where the package was found
    (its first line: 'cannot import name ...' of a torch of another version was lost). ``whole_stack``: the
    command needs all of SIMULATION_AND_TRAINING (the simulator, training, evaluation): the others missing are named
    too."""
    elsewhere = found_elsewhere(module)
    if elsewhere:
        said = ""
        if cause is not None and not isinstance(cause, ModuleNotFoundError) and str(cause).strip():
            said = f" (Python: {str(cause).strip().splitlines()[0]})"
        return f"{command}: error: needs the Python package {module!r}: {elsewhere}{said}"
    line = (
        f"{command}: error: needs the Python package {module!r}, which is not installed here ({install_hint(module)})"
    )
    stack = whole_stack and module in SIMULATION_AND_TRAINING
    others = [m for m in SIMULATION_AND_TRAINING if m != module and not _installed(m)] if stack else []
    if others:
        line += (
            f"; of the simulation and training stack it needs, {', '.join(others)} "
            f"{'is' if len(others) == 1 else 'are'} not installed here either (./run.sh installs them all; by hand, "
            "their pinned lines of requirements.txt)"
        )
    return line


def foreign_ros_libraries(environ=os.environ) -> str | None:
    """Why the ROS libraries this environment's ROS 2 wheels load may not be theirs, or None. The wheels load
    librcl and the RMW from ``<venv>/lib`` through LD_LIBRARY_PATH, which the wheels' bootstrapper (a .pth file)
    rebuilds at each start from a set, in an order that changes from one process to the next: a directory of another
    ROS installation on it (a sourced /opt/ros/<distro>/setup.bash puts its lib there) came first in some processes,
    and rclpy then failed to import or ran on that distribution's libraries. Said whatever the order."""
    ours = os.path.realpath(os.path.join(sys.prefix, "lib"))
    if not os.path.isfile(os.path.join(ours, "librcl.so")):  # not the wheels' environment (a ROS installation's)
        return None
    foreign = [
        part
        for part in dict.fromkeys(environ.get("LD_LIBRARY_PATH", "").split(os.pathsep))
        if part and os.path.realpath(part) != ours and os.path.isfile(os.path.join(part, "librcl.so"))
    ]
    if not foreign:
        return None
    distro = f" (ROS_DISTRO={environ['ROS_DISTRO']})" if environ.get("ROS_DISTRO") else ""
    return (
        f"LD_LIBRARY_PATH holds another ROS installation's libraries, {', '.join(foreign)}{distro}, which the ROS 2 "
        f"wheels of {sys.prefix} may load in place of their own: run it from a shell that has not sourced that "
        "installation's setup.bash, or with those directories left out of LD_LIBRARY_PATH"
    )


def unavailable_rmw(environ=os.environ) -> str | None:
    """Why the RMW that RMW_IMPLEMENTATION names (a .bashrc's rmw_cyclonedds_cpp) cannot be used here, or None. The
    ROS 2 wheels' librcl is built on one RMW and checks the variable as it loads: another name ended the process at
    `import rclpy` with rcl's own line ('Expected RMW implementation identifier of ... exiting with 102'), which
    does not name the variable."""
    name = environ.get("RMW_IMPLEMENTATION", "")
    lib = os.path.join(sys.prefix, "lib")
    if not name or not os.path.isfile(os.path.join(lib, "librcl.so")):  # unset, or not the wheels' environment
        return None
    if os.path.isfile(os.path.join(lib, "librmw_implementation.so")) or os.path.isfile(
        os.path.join(lib, f"lib{name}.so")
    ):
        return None
    here = sorted(
        f[3:-3]
        for f in os.listdir(lib)
        if f.startswith("librmw_") and f.endswith("_cpp.so") and "__" not in f and not f.endswith("_shared_cpp.so")
    )
    return (
        f"RMW_IMPLEMENTATION={name} (from the environment) is not an RMW of the ROS 2 wheels of {sys.prefix} "
        f"(they have {', '.join(here) or 'another'}): unset RMW_IMPLEMENTATION for this command"
    )


def unwritable_log_dir(environ=os.environ) -> str | None:
    """Why rcl cannot make its log folder (ROS_LOG_DIR, else $ROS_HOME/log, else ~/.ros/log), or None. rclpy.init
    fails then ('failed to initialize logging: Failed to create log directory'): a traceback from `liquid-control
    sim`'s status listener after its nodes had started (sim, view, replay and record check it before they start;
    `record --expert` needs no rcl and is not refused), and a folder there that rcl cannot write its log file into, a
    RuntimeError traceback (:func:`~liquid_control.ros.executable.init_ros`). Tried, as rcl would: a folder made
    where rcl makes its own (or its log file) and removed at once; os.access says writable to root also where a
    read-only mount or /sys refuses (EROFS, EPERM)."""
    if environ.get("ROS_LOG_DIR"):
        variable, folder = "ROS_LOG_DIR", environ["ROS_LOG_DIR"]
    elif environ.get("ROS_HOME"):
        variable, folder = "ROS_HOME", os.path.join(environ["ROS_HOME"], "log")
    else:
        variable, folder = "HOME", os.path.join("~", ".ros", "log")
    path = os.path.abspath(os.path.expanduser(folder))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    why = "is not a folder"
    if os.path.isdir(existing):
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".liquid_control_log_check_", dir=existing))
            return None
        except OSError as exc:
            why = f"is not writable ({exc.strerror or exc})"
    what = why if existing == path else f"cannot be created: {existing} {why}"
    return f"the ROS log folder {path} (from {variable}) {what}; set ROS_LOG_DIR to a writable folder"


def ros_environment_problem(environ=os.environ) -> str | None:
    """What in the ROS settings a user's shell carries stops this environment's ROS 2 wheels from loading: another
    installation's libraries, an RMW they do not have; None when nothing does."""
    return foreign_ros_libraries(environ) or unavailable_rmw(environ)


def run(executable: str) -> int:
    """Import the node ``executable`` names and run its ``main`` (which replaces the early signal handlers).

    A node whose imports need a package not installed here (sim_node on a robot installed without the simulator:
    gymnasium, MuJoCo), or find one that cannot be imported (a sourced ROS installation's rclpy for another Python),
    says which, in one line, and ends with status 1, as ``liquid-control`` does; so does one whose LD_LIBRARY_PATH
    holds another ROS installation's libraries or RMW_IMPLEMENTATION names an RMW not here
    (:func:`ros_environment_problem`)."""
    honour_no_color()
    problem = ros_environment_problem()
    if problem:
        print(f"{executable}: error: {problem}", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_before_start)
    try:
        module = importlib.import_module(NODE_MODULES[executable])
    except ImportError as exc:
        missing = missing_package(exc)
        if missing is None:
            raise
        print(needs_package(executable, missing, exc, whole_stack=executable == "sim_node"), file=sys.stderr)
        return 1
    return module.main()


def policy_node() -> int:
    """Console script: the policy node (``ros2 run liquid_control policy_node``)."""
    return run("policy_node")


def sim_node() -> int:
    """Console script: the simulated robot (``ros2 run liquid_control sim_node``)."""
    return run("sim_node")


def bag_recorder() -> int:
    """Console script: the rosbag2 recorder (``ros2 run liquid_control bag_recorder``)."""
    return run("bag_recorder")


def takeover_mux() -> int:
    """Console script: policy or operator to the base (``ros2 run liquid_control takeover_mux``)."""
    return run("takeover_mux")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in NODE_MODULES:
        sys.exit(f"usage: python -m liquid_control.ros.entry {{{','.join(NODE_MODULES)}}} [--ros-args ...]")
    sys.exit(run(sys.argv.pop(1)))  # the node's main reads the rest of sys.argv (its ROS arguments)
