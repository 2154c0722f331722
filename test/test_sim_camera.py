"""The camera sensor of the visual worlds (sim_envs.world.FrontCamera): leaving the geoms outside the camera's
view out of a frame (ViewCulling) changes no pixel, in either world, under the lightings and fog."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from sim_envs import world as W


@pytest.mark.parametrize(
    "world, shift",
    [
        ("LiquidRover-v0", "in_distribution"),
        ("LiquidRover-v0", "dusk"),
        ("LiquidRover-v0", "fog=0.6"),
        ("LiquidBalanceNav-v0", "in_distribution"),
        ("LiquidBalanceNav-v0", "winter"),
    ],
)
def test_culled_frames_are_the_whole_frames_pixel_for_pixel(world, shift, monkeypatch):
    culled = []
    apply = W.ViewCulling.apply
    monkeypatch.setattr(W.ViewCulling, "apply", lambda self, scene, data: culled.append(apply(self, scene, data)))
    env = gym.make(world, shift=shift).unwrapped
    env.reset(seed=0)
    assert culled, "the world's camera messages left nothing out by default"
    rng = np.random.default_rng(0)
    frames = 0
    for seed in (0, 1):
        env.reset(seed=seed)
        for k in range(40):
            env.cull_outside_view = True
            part = env._render_camera()
            env.cull_outside_view = False
            whole = env._render_camera()
            np.testing.assert_array_equal(part, whole, err_msg=f"{world} {shift} seed {seed} update {k}")
            frames += 1
            # the expert's path, with turns off it so the camera looks around the arena
            action = env.expert_action() if k % 4 else rng.uniform(-1, 1, env.action_space.shape)
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.close()
    # the comparison above ran with geoms left out: on average a good part of each world's geoms
    assert len(culled) >= frames and sum(culled) / len(culled) >= 5, culled


def test_view_culling_keeps_what_touches_the_view_and_drops_what_is_behind():
    env = gym.make("LiquidRover-v0").unwrapped
    env.reset(seed=0)
    env._render_camera()
    model, data = env.model, env.data
    culling = W.ViewCulling(model, "front", aspect=1.0)
    camera = model.camera("front").id
    forward, right = -data.cam_xmat[camera].reshape(3, 3)[:, 2], data.cam_xmat[camera].reshape(3, 3)[:, 0]
    trunk = model.geom("trunk0").id
    radius = model.geom_rbound[trunk]
    half_width = np.tan(np.deg2rad(model.cam_fovy[camera]) / 2)  # at unit depth
    ahead = data.cam_xpos[camera] + 4 * forward  # 4 m in front of the camera, on its axis
    placements = {
        "ahead": (ahead, False),
        "behind": (data.cam_xpos[camera] - 4 * forward, True),
        # beside the view: the bounding sphere just clear of the widened side plane, or reaching into the view
        "beside, clear": (ahead + (4 * culling.tan_x + 1.1 * (radius + 0.01) * culling.norm_x) * right, True),
        "beside, touching": (ahead + (4 * half_width + 0.9 * radius * np.hypot(1, half_width)) * right, False),
    }
    scene = env._renderer.scene
    for name, (position, dropped) in placements.items():
        env._renderer.update_scene(data, camera="front")
        index = next(i for i in range(scene.ngeom) if scene.geoms[i].objid == trunk)
        scene.geoms[index].pos[:] = position
        data.geom_xpos[trunk] = position  # what the culling reads
        culling.apply(scene, data)
        assert (scene.geoms[index].type == mujoco.mjtGeom.mjGEOM_NONE) == dropped, name
    env.close()
