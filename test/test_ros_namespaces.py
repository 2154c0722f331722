"""The nodes as an integrator runs them on a robot with other drivers: in a namespace (`-r __ns:=/robot1`), with
the package's parameter files."""

import pytest
import rclpy
import yaml
from rclpy.node import Node

from liquid_control import paths
from liquid_control.conventions.params import POLICY_NODE_PARAMETERS, declare_node_parameters
from liquid_control.ros.policy_node import PolicyNode
from liquid_control.ros.sim_node import SIM_NODE_PARAMETERS
from liquid_control.ros.testing import isolated_ros_env

SHIPPED = sorted(paths.config_dir().glob("*.yaml"))
SimNodeName = "sim_node"  # node_in makes a plain node of that name with sim_node's parameters


def file_parameters(path) -> dict:
    """The parameters of a shipped file's one section (whatever it is named)."""
    (section,) = yaml.safe_load(path.read_text()).values()
    return section["ros__parameters"]


@pytest.fixture
def node_in(request):
    """A factory: ``make(cls_or_name, namespace, params_file)`` -> a node on a private context whose rcl arguments
    are ``--ros-args -r __ns:=<namespace> --params-file <file>``, as ``ros2 run ... --ros-args`` gives them (and
    the process's arguments the nodes read the file's sections from)."""
    made = []

    def make(kind, namespace, params_file):
        context = rclpy.Context()
        args = ["node", "--ros-args", "--params-file", str(params_file)]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        rclpy.init(args=args, context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
        if kind is PolicyNode:
            node = PolicyNode(context=context, argv=args)
        else:  # sim_node's parameter table on a plain node (a SimNode builds its world in __init__)
            node = Node(kind, context=context)
            declare_node_parameters(node, SIM_NODE_PARAMETERS, argv=args)
        made.append((node, context))
        return node

    yield make
    for node, context in made:
        node.destroy_node()
        context.try_shutdown()


@pytest.mark.parametrize("namespace", ["", "/robot1", "/fleet/robot2"])
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_namespaced_node_gets_every_parameter_of_the_shipped_files(node_in, path, namespace):
    """The shipped files' sections were `policy_node:` and `sim_node:`, which ROS gives to /policy_node and
    /sim_node only: under `-r __ns:=/robot1` (or a launch file's namespace) the whole file was ignored without a
    word, and the node ran on its defaults (the rover's action_scale [1.0] instead of [1.0, 1.5], sim_node without
    its policy reset)."""
    kind = SimNodeName if path.name == "sim.yaml" else PolicyNode
    node = node_in(kind, namespace, path)
    assert node.get_fully_qualified_name() == f"{namespace}/{node.get_name()}"
    given = file_parameters(path)
    table = SIM_NODE_PARAMETERS if kind == SimNodeName else POLICY_NODE_PARAMETERS
    assert set(given) <= set(table) | {"use_sim_time"}
    got = {name: node.get_parameter(name).value for name in given}
    got = {k: list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v for k, v in got.items()}
    assert got == given, path.name


@pytest.mark.parametrize("namespace", ["", "/robot1"])
def test_the_sim_resets_the_policy_node_of_its_own_namespace(node_in, namespace):
    """config/sim.yaml named the absolute /policy_node/reset: two graphs in /robot1 and /robot2 on one domain each
    called the root namespace's service (another graph's policy, or none: 5 s of waiting and a warning before
    every episode, the policy never reset between episodes)."""
    sim = node_in(SimNodeName, namespace, paths.config_dir() / "sim.yaml")
    policy = node_in(PolicyNode, namespace, paths.config_dir() / "rover_policy.yaml")
    called = sim.resolve_service_name(sim.get_parameter("policy_reset_service").value)
    assert called == policy.resolve_service_name("~/reset") == f"{namespace}/policy_node/reset"


def test_a_shared_section_may_hold_other_nodes_parameters_but_not_typos(node_in, tmp_path, monkeypatch):
    """A fleet's file with a `/**:` section (every node's) holding sim_node's frame_prefix made policy_node warn
    'ignoring unknown parameter(s) frame_prefix'. Another node's parameter of this package there is that node's;
    a name no node knows there, or another node's in the node's own section, is still warned of (naming whose)."""
    from rclpy.impl.rcutils_logger import RcutilsLogger

    from liquid_control.conventions.params import shared_section_parameters

    warnings = []
    monkeypatch.setattr(RcutilsLogger, "warning", lambda self, msg, **kw: warnings.append(msg))
    fleet = tmp_path / "fleet.yaml"
    shared = {"frame_prefix": "robot1/", "watchdog_timeout_s": 0.4, "qos_depth": 50}
    fleet.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": shared},
                "/**/policy_node": {"ros__parameters": {"command_topic": "cmd_vel"}},
                "/**/sim_node": {"ros__parameters": {"world": "LiquidRover-v0"}},
            }
        )
    )
    policy = node_in(PolicyNode, "/robot1", fleet)
    sim = node_in(SimNodeName, "/robot1", fleet)
    assert warnings == [] and policy.get_parameter("watchdog_timeout_s").value == 0.4
    assert sim.get_parameter("frame_prefix").value == "robot1/"
    shared.update(watchdog_timout_s=1.0)  # a typo: no node's
    fleet.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": shared},
                "/**/policy_node": {"ros__parameters": {"command_topic": "cmd_vel", "topics": ["/imu/data"]}},
            }
        )
    )
    node_in(PolicyNode, "/robot1", fleet)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("ignoring unknown parameter(s) topics (bag_recorder's), watchdog_timout_s: "), (
        warnings
    )
    # a -p on the command line is this node's, whatever a shared section holds
    argv = ["policy_node", "--ros-args", "--params-file", str(fleet), "-p", "frame_prefix:=r2/"]
    expected = {"watchdog_timeout_s", "qos_depth", "watchdog_timout_s"}
    assert shared_section_parameters("/robot1/policy_node", argv) == expected
    # a file of one `/**:` section is the node's own: what launch_ros writes for Node(parameters=[{...}]), where
    # sim_node's `episodes` is a slip (the review: it went unwarned)
    launch = tmp_path / "launch_params.yaml"
    launch.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"episodes": 3, "watchdog_timeout_s": 0.4}}}))
    argv = ["policy_node", "--ros-args", "--params-file", str(launch)]
    assert shared_section_parameters("/robot1/policy_node", argv) == set()
    warnings.clear()
    node_in(PolicyNode, "/robot1", launch)
    assert len(warnings) == 1 and warnings[0].startswith("ignoring unknown parameter(s) episodes (sim_node's): ")


def test_the_package_parameter_names_are_each_nodes_table():
    """PACKAGE_PARAMETER_NAMES (what a shared section may hold without a warning) keeps each node's table's names."""
    from liquid_control.conventions.params import PACKAGE_PARAMETER_NAMES
    from liquid_control.ros.recorder_node import RECORDER_PARAMETERS
    from liquid_control.ros.takeover_mux import MUX_PARAMETERS

    tables = {
        "policy_node": POLICY_NODE_PARAMETERS,
        "sim_node": SIM_NODE_PARAMETERS,
        "bag_recorder": RECORDER_PARAMETERS,
        "takeover_mux": MUX_PARAMETERS,
    }
    assert {node: set(names) for node, names in PACKAGE_PARAMETER_NAMES.items()} == {
        node: set(table) for node, table in tables.items()
    }
