"""liquid_control: liquid neural network (LTC/CfC) policies for robots.

Layers, bottom up (docs/ARCHITECTURE.md; imports only go downwards): ``cells`` (continuous-time cells, ODE
solvers) -> ``policy`` (encoders + recurrent core + action head, one YAML config) -> ``runtime`` (streaming
inference by measured dt, export) -> ``conventions`` (what bags and nodes share, no rclpy) -> ``bags`` (rosbag2
recordings) -> ``training`` -> ``evaluation`` -> ``ros`` (ROS 2 nodes). The MuJoCo worlds stand beside them in
the top-level ``sim_envs`` package, which imports only the runtime's update timeline.
"""

__version__ = "0.1.0"
