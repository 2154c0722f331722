"""The evaluation's only contact with the layers below: worlds (sim_envs), policies, and the expert.

Kept in one module so that the rest of the evaluation (plan, backends, report) does not care how a
checkpoint is loaded or how a world is built.
"""

from __future__ import annotations

from liquid_control.evaluation.errors import EvaluationSetupError
from liquid_control.evaluation.shifts import shift_for_env

_POLICY_CACHE: dict[tuple[str, str | None], object] = {}  # per process: (path, sha) -> Policy


def default_env_kwargs(policy_config: dict | None) -> dict:
    """Keyword arguments for gymnasium.make: the world as the policy was trained on it (camera size, update
    sensors, reordering lag: ``liquid_control.policy.env_kwargs``; the camera size alone for a gymnasium world
    that is no TimedMujocoWorld, as training made it)."""
    if not policy_config:
        return {}
    import sim_envs
    from liquid_control.policy import env_kwargs

    world = policy_config.get("world") or "LiquidRover-v0"
    try:
        timed = bool(getattr(sim_envs.world_class(world), "sensor_names", ()))
    except KeyError as exc:  # an unregistered world: refused naming it, as the plan does for --world
        raise EvaluationSetupError(f"world: {exc.args[0]}") from None
    kwargs = env_kwargs(policy_config, timed=timed)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}


def inspect_checkpoint(path: str) -> dict:
    """Load a checkpoint once in the parent: name, world, training seed, parameter counts (errors name the file)."""
    from liquid_control.policy import load_policy

    try:
        policy = load_policy(path)
    except Exception as exc:  # PolicyLoadError, or anything a broken file raises
        raise EvaluationSetupError(f"cannot load checkpoint {path!r}: {exc}") from exc
    config = dict(policy.config)
    if "world" in config and config["world"] is None:  # a robot's policy trained from bags alone
        raise EvaluationSetupError(
            f"checkpoint {path!r}: its config names no world (world: null: trained from recorded bags alone), so "
            "there is no simulated world to drive it in; check it offline on held-out bags: liquid-control eval --bag"
        )
    metadata = _checkpoint_metadata(policy)
    seed = metadata.get("seed", metadata.get("training_seed"))
    core = getattr(policy, "core", None)
    return {
        "name": str(config.get("name") or path),
        "world": str(config.get("world", "LiquidRover-v0")),
        "training_seed": int(seed) if seed is not None else None,
        "parameter_count": count_parameters(policy),
        "core_parameter_count": count_parameters(core) if core is not None else None,
        "env_kwargs": default_env_kwargs(config),
        "training_shift": str((config.get("training") or {}).get("shift") or ""),  # "": the worlds' own setting
    }


def _checkpoint_metadata(policy) -> dict:
    meta = getattr(policy, "metadata", None)
    return dict(meta) if isinstance(meta, dict) else {}


def count_parameters(module) -> int:
    """Number of trainable parameters of ``module``."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def make_env(world: str, shift: str, env_kwargs: dict):
    """The world ``world`` under ``shift`` (a shift string), built with ``env_kwargs``."""
    import gymnasium

    import sim_envs  # noqa: F401  (registers the worlds)

    return gymnasium.make(world, shift=shift_for_env(shift), **env_kwargs)


class ExpertAgent:
    """The privileged expert as an agent: a reference row in every report (it sees the true state)."""

    def __init__(self, env):
        self._env = env

    def reset(self) -> None:
        """Nothing to reset: the expert holds no state."""
        pass

    def act(self, obs):
        """The world's privileged expert action (``obs`` is not used)."""
        return self._env.unwrapped.expert_action()


def load_cached_policy(path: str, sha: str | None):
    """The policy at ``path`` in eval mode, loaded once per process and file contents (``sha``)."""
    key = (path, sha)
    if key not in _POLICY_CACHE:
        from liquid_control.policy import load_policy

        policy = load_policy(path)
        policy.eval()
        _POLICY_CACHE[key] = policy
    return _POLICY_CACHE[key]


def kernel_path(policy) -> str:
    """What an episode's record says of the kernels the policy's cells take in this process (``kernels``: its
    CPU's and settings'; the last bits, and so some closed-loop outcomes, follow them)."""
    from liquid_control.cells import kernels

    return kernels.path_for(policy.core, "step")


def make_agent(checkpoint: str | None, checkpoint_sha: str | None, env):
    """The expert when ``checkpoint`` is None, else a PolicyAgent for the (cached) checkpoint."""
    if checkpoint is None:
        return ExpertAgent(env)
    from liquid_control.policy import PolicyAgent

    return PolicyAgent(load_cached_policy(checkpoint, checkpoint_sha))
