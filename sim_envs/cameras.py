"""The worlds' front cameras: vertical field of view (degrees) by world id, MuJoCo's ``fovy`` of the square camera.

Plain numbers, importable without gymnasium or MuJoCo: a robot that only runs ``policy_node`` compares its camera's
``camera_info`` with them for a policy file that does not record its training camera (the shipped policies), as
``conventions.camera_info.world_camera_fovy_deg`` reads them; each world's module takes its own from here.
"""

CAMERA_FOVY_DEG = {
    # 100 rather than 75: the expert's detours around path obstacles turn the target out of a 75-degree view
    # (target invisible in 13.5% of expert demonstration frames at 75 degrees, 8.2% at 100), which makes those
    # labels unobservable for a camera policy.
    "LiquidRover-v0": 100.0,
    "LiquidBalanceNav-v0": 90.0,
}
