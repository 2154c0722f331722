"""conventions layer of liquid_control (see docs/ARCHITECTURE.md): how the package speaks ROS 2 without rclpy.

The conventions that recordings (``bags``, offline) and the nodes (``ros``, live) must share exactly:
``sensor_msgs/Image`` <-> numpy (``image_conversion``), a ``CameraInfo`` against the training camera
(``camera_info``), ``header.stamp`` <-> seconds (``stamps``: the dt the node integrates is the dt training from a bag
takes), the readings of the other messages: an ``Imu``'s ``[gyro, accel]`` and its gravity check (``imu``), a
``JointState``'s wheel velocities by name (``joints``), a ``Twist``'s ``[linear.x, angular.z]`` and the commands of
every command type (``commands``), the policy node's parameters, their checks and each world's parameter file
(``params``), the names of message types as bags record them and the graph reports them (``message_types``), and
what sim_node publishes for each simulated world, which ``record --expert`` writes too (``sim_worlds``).
Nothing here imports rclpy, so training from bags runs without ROS.
"""
