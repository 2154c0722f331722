"""liquid_control: liquid neural network (LTC/CfC) policies for robots.

Layers, bottom up: ``cells`` (continuous-time recurrent cells and ODE solvers) -> ``policy`` (encoders +
recurrent core + action head, one YAML config) -> ``runtime`` (streaming inference by measured dt, export)
-> ``ros`` (ROS 2 nodes). ``training`` and ``evaluation`` sit beside the runtime; the MuJoCo worlds live
apart in the top-level ``sim_envs`` package.
"""

__version__ = "0.1.0"
