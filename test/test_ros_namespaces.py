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
    are ``--ros-args -r __ns:=<namespace> --params-file <file>``, as ``ros2 run ... --ros-args`` gives them."""
    made = []

    def make(kind, namespace, params_file):
        context = rclpy.Context()
        args = ["node", "--ros-args", "--params-file", str(params_file)]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        rclpy.init(args=args, context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
        if kind is PolicyNode:
            node = PolicyNode(context=context)
        else:  # sim_node's parameter table on a plain node (a SimNode builds its world in __init__)
            node = Node(kind, context=context)
            declare_node_parameters(node, SIM_NODE_PARAMETERS)
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
