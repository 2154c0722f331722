"""What an evaluation runs: policies x shifts x training seeds x episode seeds, validated before any work.

Everything that can be wrong with the request (an unknown shift, a missing or corrupt checkpoint, policies
for different worlds) is found here, in the parent process, before a single episode starts — an evaluation
that fails an hour in because of a typo in the last shift name wastes the hour.

Episode seeds are the same list for every policy and every training seed, so two policies are compared on
the same worlds (paired comparison): seed `episode_seed_base + i` for episode i.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from dataclasses import asdict, dataclass, field

from liquid_control.conventions.params import EPISODE_SEED_LIMIT
from liquid_control.evaluation import agents
from liquid_control.evaluation.errors import EvaluationSetupError
from liquid_control.evaluation.shifts import (
    DEFAULT_SHIFT,
    check_shift,
    check_shift_applies,
    shift_changes,
    shift_for_env,
)
from liquid_control.paths import (
    expand_pattern,
    output_folder_problem,
    policies_dir,
    shipped_name_hint,
    shipped_policy_for,
)
from liquid_control.policy.config import package_world_id
from liquid_control.runtime.backends import checkpoint_sha256

EXPERT = "expert"
DEFAULT_WORLD = "LiquidRover-v0"  # the expert's world when neither --world nor a policy names one
DEFAULT_EPISODE_SEED_BASE = 20_000_000  # outside the seed ranges training uses (1e6 + 1e5*seed..., 9e6...)
BACKENDS = ("process", "serial", "ray")  # where the episodes run (evaluation.backends runs them)
DEFAULT_LANES = 32  # episodes stepped together per batch (a headline cell is 30 episodes)
# A policy name names report files (neuron_traces_<name>.png), report table cells and --paired A,B items.
POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class PolicySpec:
    """One policy under test: the privileged expert, or one checkpoint per training seed."""

    name: str
    checkpoints: tuple[str, ...] = ()  # empty for the expert
    training_seeds: tuple[int, ...] = (0,)
    world: str | None = None
    env_kwargs: dict = field(default_factory=dict, compare=False)
    parameter_count: int | None = None  # trainable parameters of the whole policy (None for the expert)
    core_parameter_count: int | None = None
    checkpoint_sha: tuple[str, ...] = ()
    # training seeds that stand in for a checkpoint that recorded none (the first unused numbers): never paired
    # with another policy's seed of that number, which is not the same training run's seed
    unrecorded_seeds: tuple[int, ...] = ()

    @property
    def is_expert(self) -> bool:
        """Whether this is the privileged expert (no checkpoints)."""
        return not self.checkpoints


@dataclass(frozen=True)
class EpisodeJob:
    """One episode: everything a worker (local process or Ray node) needs, picklable and self-describing."""

    policy: str
    training_seed: int
    shift: str
    episode_seed: int
    world: str
    checkpoint: str | None  # None: the privileged expert
    checkpoint_sha: str | None
    env_kwargs: dict

    @property
    def key(self) -> tuple:
        """Identity of the episode in the results log (``episode_key``)."""
        return episode_key(self.policy, self.training_seed, self.shift, self.episode_seed)

    def to_dict(self) -> dict:
        """The job as a plain dict."""
        return asdict(self)


def episode_key(policy: str, training_seed: int, shift: str, episode_seed: int) -> tuple:
    """Identity of an episode in the results log (what `--resume` matches on)."""
    return (str(policy), int(training_seed), str(shift), int(episode_seed))


class CheckpointChangedError(RuntimeError):
    """A checkpoint whose bytes are not those the plan recorded (replaced, planted or corrupted since)."""


def verify_checkpoint(path: str, sha256: str) -> None:
    """Refuse to evaluate ``path`` unless its SHA-256 is the one the plan recorded: a file swapped after the
    plan was made, or planted under a cached copy's name, would otherwise be reported under another name."""
    found = checkpoint_sha256(path)
    if found != sha256:
        raise CheckpointChangedError(
            f"checkpoint {path}: SHA-256 {found[:16]}... is not the {sha256[:16]}... recorded when the evaluation "
            "was planned (the file was replaced or tampered with); refusing to evaluate it"
        )


def _names_files(value: str) -> bool:
    """Whether every comma-separated part of ``value`` names something that exists: a path (a glob's matches), or a
    shipped policy."""
    parts = [part.strip() for part in value.split(",") if part.strip()]

    def exists(path: str) -> bool:
        return os.path.lexists(path) or shipped_policy_for(path) is not None

    return bool(parts) and all((found := expand_pattern(part)) and all(map(exists, found)) for part in parts)


def parse_policy_argument(text: str) -> tuple[str | None, list[str]]:
    """`expert` | `[NAME=]CKPT[,CKPT...]` (globs allowed; one checkpoint per training seed) -> (name, paths).

    In a value with a '=', the text before the first '=' is a NAME where it holds no '/' (`cfc=runs/lr=0.1/policy.pt`)
    unless the whole value names existing files and the rest does not (`lr=0.1/policy.pt` given in runs/); a value
    whose text before the '=' holds a '/' is a path (`runs/lr=0.1/policy.pt`, a sweep's run folder) unless only the
    rest names files (a NAME with a '/': refused as a name). A NAME without '/' where both readings name files is
    refused as ambiguous (`./` before the value makes it a path)."""
    text = text.strip()
    if not text:
        raise EvaluationSetupError("empty --policy value")
    if text == EXPERT:
        return EXPERT, []
    name, sep, rest = text.partition("=")
    if sep:
        whole = _names_files(text)  # a file whose own name holds the '='
        named = bool(name and rest) and _names_files(rest)
        if whole and named and "/" not in name:
            given = rest if rest.startswith(("/", "~", "./")) else f"./{rest}"
            raise EvaluationSetupError(
                f"--policy {text!r} reads two ways: the checkpoint {text}, and policy {name!r} at {rest}; write "
                f"./{text} for the first, or {name}={given} for the second"
            )
        if whole or ("/" in name and not named):
            sep = ""
    if not sep:
        name, rest = None, text
    elif not name or not rest:
        raise EvaluationSetupError(f"--policy {text!r}: expected NAME=CHECKPOINT[,CHECKPOINT...]")
    elif name == EXPERT:
        raise EvaluationSetupError(
            f"--policy {text!r}: the name {EXPERT!r} is the privileged expert's; name the checkpoint differently"
        )
    paths: list[str] = []
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        matches = expand_pattern(part)
        if not matches:
            raise EvaluationSetupError(f"--policy {text!r}: no checkpoint matches {part!r}")
        paths.extend(matches)
    if not paths:
        raise EvaluationSetupError(f"--policy {text!r}: no checkpoint given")
    return name, paths


def checkpoint_file(path: str, name: str | None) -> str:
    """The checkpoint file ``path`` names: as given, else a shipped policy named as the docs name it
    (``policies/cfc_ncp_rover.pt``, also from an installed package). EvaluationSetupError naming it otherwise."""
    if os.path.isdir(path):  # e.g. a training run's folder: its checkpoint is the policy.pt inside
        inside = os.path.join(path, "policy.pt")
        hint = f"; did you mean {inside}?" if os.path.isfile(inside) else ""
        raise EvaluationSetupError(
            f"checkpoint {path!r} is a folder, not a checkpoint file (policy {name or path!r}){hint}"
        )
    if os.path.isfile(path):
        return path
    shipped = shipped_policy_for(path)
    if shipped is None:
        hint = shipped_name_hint(path, policies_dir(), ".pt")
        raise EvaluationSetupError(f"checkpoint {path!r} does not exist (policy {name or path!r}){hint}")
    print(f"liquid-control eval: {path} is not in {os.getcwd()}: the shipped {shipped}", file=sys.stderr, flush=True)
    return str(shipped)


def resolve_policy(
    name: str | None, paths: list[str], default_world: str, trained_shifts: dict | None = None
) -> PolicySpec:
    """Load every checkpoint once (errors name the file), read world/seed/size; the expert needs no file.
    ``trained_shifts``: filled with the policy's name -> [(checkpoint, its training.shift)], for the plan's word on
    policies trained under a shift (:func:`_say_trained_under_a_shift`)."""
    if name == EXPERT and not paths:
        return PolicySpec(name=EXPERT, world=default_world, env_kwargs=agents.default_env_kwargs(None))
    given, paths = paths, [checkpoint_file(path, name) for path in paths]
    seen: dict[str, str] = {}
    for path, as_given in zip(paths, given):  # one file twice would count as two training seeds of the same run
        key = os.path.realpath(path)
        if key in seen:
            raise EvaluationSetupError(
                f"policy {name or given[0]!r}: {as_given} is given twice (the same file as {seen[key]}; one "
                "checkpoint per training seed)"
            )
        seen[key] = as_given
    infos = [agents.inspect_checkpoint(path) for path in paths]  # raises EvaluationSetupError naming the file
    if trained_shifts is not None:
        trained_shifts[name or infos[0]["name"]] = [(p, info["training_shift"]) for p, info in zip(paths, infos)]
    worlds = {info["world"] for info in infos}
    if len(worlds) != 1:
        raise EvaluationSetupError(f"policy {name!r}: checkpoints are for different worlds {sorted(worlds)}")
    recorded = [info["training_seed"] for info in infos]
    for i, seed in enumerate(recorded):  # comparisons pair policies by training seed (the same demonstrations)
        if seed is not None and seed in recorded[:i]:
            raise EvaluationSetupError(
                f"policy {name or paths[0]!r}: {paths[recorded.index(seed)]} and {paths[i]} both record training "
                f"seed {seed}; one policy's checkpoints are its training seeds, which the comparisons pair across "
                "policies: give runs of the same seed as policies of their own (NAME=CHECKPOINT)"
            )
    free = (n for n in itertools.count() if n not in recorded)  # a checkpoint without a seed: the next unused
    seeds = [seed if seed is not None else next(free) for seed in recorded]
    counts = {info["parameter_count"] for info in infos}
    if len(counts) != 1:
        raise EvaluationSetupError(
            f"policy {name!r}: its checkpoints have different sizes {sorted(counts)}; "
            "one policy name must be one architecture (several training seeds)"
        )
    for i, info in enumerate(infos[1:], start=1):  # every checkpoint runs in one world: the policy's settings
        setting = _differing_world_setting(infos[0]["env_kwargs"], info["env_kwargs"])
        if setting:
            raise EvaluationSetupError(
                f"policy {name or paths[0]!r}: {paths[0]} and {paths[i]} differ in {setting}; one policy name must "
                "be one architecture and one observation spec (several training seeds): give them as policies of "
                "their own (NAME=CHECKPOINT)"
            )
    return PolicySpec(
        name=name or infos[0]["name"],
        checkpoints=tuple(os.path.abspath(p) for p in paths),
        training_seeds=tuple(int(s) for s in seeds),
        world=infos[0]["world"],
        env_kwargs=infos[0]["env_kwargs"],
        parameter_count=infos[0]["parameter_count"],
        core_parameter_count=infos[0]["core_parameter_count"],
        checkpoint_sha=tuple(checkpoint_sha256(p) for p in paths),
        unrecorded_seeds=tuple(int(s) for s, r in zip(seeds, recorded) if r is None),
    )


def _say_trained_under_a_shift(trained_shifts: dict, shifts: list[str]) -> None:
    """A warning for checkpoints trained with ``training.shift`` set, where ``in_distribution`` is evaluated: that
    row is the worlds' nominal setting, which for them is a shift, and their own training world is another row."""
    if DEFAULT_SHIFT not in shifts:
        return
    for name, trained in trained_shifts.items():
        shifted = [(path, shift) for path, shift in trained if _changes(shift)]
        if not shifted:
            continue
        own = shifted[0][1]
        where = f"its own world is the {own!r} row" if own in shifts else f"--shift {own} evaluates it in its own world"
        print(
            f"liquid-control eval: warning: policy {name!r} was trained with training.shift set "
            f"({', '.join(f'{path} under {shift!r}' for path, shift in shifted)}): {DEFAULT_SHIFT} is the worlds' "
            f"nominal setting (summer, noon, nominal sensors), a shift for it; {where}",
            file=sys.stderr,
            flush=True,
        )


def _say_shifts_a_policy_does_not_read(specs: list[PolicySpec], shifts: list[str]) -> None:
    """A warning for each shift that changes a sensor a policy does not read (an IMU shift for a camera-only policy:
    its row is the in-distribution one under another name, bit for bit; said nowhere before). Not refused, as a
    shift a world cannot act on is: it may act on another policy of the request (a camera + IMU one)."""
    from sim_envs.shifts import parse_shift

    for shift in shifts:
        try:
            parsed = parse_shift(shift_for_env(shift))
        except ValueError:  # a preset of a world of one's own: checked by check_shift_applies
            continue
        for spec in specs:
            inputs = spec.env_kwargs.get("policy_inputs")
            problem = None if spec.is_expert or inputs is None else parsed.unread_problem(spec.name, inputs)
            if problem:
                print(
                    f"liquid-control eval: warning: --shift {shift}: {problem}: its row for {spec.name!r} measures "
                    "no change there",
                    file=sys.stderr,
                    flush=True,
                )


def _changes(shift: str) -> bool:
    """Whether ``shift`` changes anything from the worlds' nominal setting (one a module adds counts as a change)."""
    try:
        return bool(shift_changes(shift))
    except EvaluationSetupError:  # a preset of a world of one's own that is not imported here
        return True


# env_kwargs key -> the policy config setting it comes from (liquid_control.policy.config.env_kwargs)
_WORLD_SETTINGS = {
    "update_on": "observation.update_on",
    "reorder_lag_s": "observation.reorder_lag_s",
    "render_size": "observation.image (height, width)",
    "policy_inputs": "the policy's inputs (observation.image and observation.vectors)",
}


def _differing_world_setting(first: dict, other: dict) -> str | None:
    """The first world setting two checkpoints' env_kwargs disagree on, as "SETTING (A vs B)", else None."""
    for key in sorted(set(first) | set(other), key=lambda k: (k not in _WORLD_SETTINGS, k)):
        a, b = first.get(key), other.get(key)
        if a != b:
            return f"{_WORLD_SETTINGS.get(key, key)} ({a!r} vs {b!r})"
    return None


def validate_shifts(shifts: list[str]) -> list[str]:
    """Each shift must parse (`sim_envs.shifts.parse_shift`); the error names the shift."""
    if not shifts:
        raise EvaluationSetupError("no shift given")
    from sim_envs.shifts import parse_shift

    seen: list[str] = []
    worlds: dict[str, str] = {}  # canonical form -> the first spelling of that world
    for shift in shifts:
        shift = shift.strip() or DEFAULT_SHIFT
        check_shift(shift)
        if shift in seen:  # the same spelling twice (e.g. from two shift sets): one row
            continue
        canonical = parse_shift(shift).to_string()
        if canonical in worlds:  # one world under two labels would run twice and be reported as two shifts
            raise EvaluationSetupError(
                f"--shift {worlds[canonical]!r} and --shift {shift!r} are the same world "
                f"({canonical or DEFAULT_SHIFT!r}); give it once"
            )
        worlds[canonical] = shift
        seen.append(shift)
    return seen


def validate_world(world: str) -> None:
    """The world must be a registered gymnasium id (sim_envs registers ours) or ``module:Id`` of a world of one's
    own (``sim_envs.world_spec``); the error lists ours and says how to register one."""
    import sim_envs

    try:
        sim_envs.world_spec(world)
    except ValueError as exc:
        raise EvaluationSetupError(f"--world {world!r}: {exc}") from None


def validate_output_folder(out_dir: str) -> None:
    """``out_dir`` must be a folder this process can write (``paths.output_folder_problem``; created if missing):
    a clear error now, not an OSError after the episodes ran."""
    problem = output_folder_problem(out_dir)
    if problem:
        raise EvaluationSetupError(f"--out {out_dir}: {problem}")
    refuse_training_run_folder(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:  # it changed since the check
        raise EvaluationSetupError(f"--out {out_dir}: cannot create it ({exc.strerror or exc})") from None


def refuse_training_run_folder(out_dir: str) -> None:
    """``out_dir`` must not be a training run's folder (``train --out``): the report's files would lie among the
    run's (policy.pt, config.yaml, checkpoint.pt), with names a run or a tool may read."""
    from pathlib import Path

    from liquid_control.training.run_folder import training_run_entries

    entries = training_run_entries(Path(out_dir))
    if entries:
        raise EvaluationSetupError(
            f"--out {out_dir}: is a training run's folder (it holds {', '.join(entries)}); the report would be "
            f"written among the run's files: give a folder of its own, e.g. --out {os.path.join(out_dir, 'eval')}"
        )


@dataclass
class EvaluationPlan:
    """The validated request: policies, shifts and episode seeds; ``jobs`` lists every episode."""

    policies: list[PolicySpec]
    shifts: list[str]
    episode_seeds: list[int]

    @property
    def jobs(self) -> list[EpisodeJob]:
        """Ordered so that every policy/seed gets a first pass over all shifts before more episodes."""
        jobs = []
        for episode_seed in self.episode_seeds:
            for shift in self.shifts:
                for spec in self.policies:
                    for i, training_seed in enumerate(spec.training_seeds):
                        jobs.append(
                            EpisodeJob(
                                policy=spec.name,
                                training_seed=training_seed,
                                shift=shift,
                                episode_seed=episode_seed,
                                world=spec.world,
                                checkpoint=None if spec.is_expert else spec.checkpoints[i],
                                checkpoint_sha=None if spec.is_expert else spec.checkpoint_sha[i],
                                env_kwargs=dict(spec.env_kwargs),
                            )
                        )
        return jobs


def build_plan(
    policy_args: list[str],
    shifts: list[str],
    episodes: int,
    episode_seed_base: int = DEFAULT_EPISODE_SEED_BASE,
    world: str | None = None,
) -> EvaluationPlan:
    """Parse and validate a whole request; raises EvaluationSetupError before anything runs.

    ``world``: the world asked for (``--world``); None: the policies' own, or DEFAULT_WORLD for the expert
    alone. A world that is not the policies' is refused (they run in the world they were trained in).
    """
    if episodes < 1:
        raise EvaluationSetupError(f"--episodes must be >= 1, got {episodes}")
    if episode_seed_base < 0 or episode_seed_base + episodes > EPISODE_SEED_LIMIT:
        raise EvaluationSetupError(  # a bound shared with liquid-control sim: every episode one can run, the other can
            f"--episode-seed-base must be >= 0 with every seed below 2**32 (EPISODE_SEED_LIMIT, as liquid-control "
            f"sim's), got {episode_seed_base}"
        )
    if not policy_args:
        raise EvaluationSetupError("no policy given (use --policy expert or --policy NAME=CHECKPOINT)")
    world = package_world_id(world) if world else world  # compared with the policies' worlds below
    validate_world(world or DEFAULT_WORLD)
    specs: list[PolicySpec] = []
    trained_shifts: dict = {}
    for text in policy_args:
        name, paths = parse_policy_argument(text)
        specs.append(resolve_policy(name, paths, world or DEFAULT_WORLD, trained_shifts))
        check_policy_name(specs[-1].name, () if name else paths)
    check_distinct_checkpoints(specs)
    policy_worlds = {s.world for s in specs if not s.is_expert}
    if len(policy_worlds) > 1:
        raise EvaluationSetupError(
            f"policies are for different worlds {sorted(policy_worlds)}; evaluate one world at a time"
        )
    if world is not None and policy_worlds and world not in policy_worlds:
        raise EvaluationSetupError(
            f"--world {world}: the policies are for {next(iter(policy_worlds))} (a policy runs in the world it "
            "was trained in); leave --world out or evaluate a policy of that world"
        )
    evaluated = next(iter(policy_worlds)) if policy_worlds else world or DEFAULT_WORLD
    validate_world(evaluated)  # imports a world of one's own ('module:Id'), whose module may add shift presets
    shifts = validate_shifts(shifts)
    for shift in shifts:  # a shift on a sensor the world lacks would be an in-distribution row, mislabelled
        check_shift_applies(shift, evaluated)
    _say_trained_under_a_shift(trained_shifts, shifts)
    _say_shifts_a_policy_does_not_read(specs, shifts)
    if policy_worlds:  # the expert drives the same world, rendered the same way, as the trained policies
        trained = next(s for s in specs if not s.is_expert)
        specs = [
            PolicySpec(name=s.name, world=trained.world, env_kwargs=dict(trained.env_kwargs)) if s.is_expert else s
            for s in specs
        ]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvaluationSetupError(f"policy names must be unique, repeated: {duplicates} (use NAME=CHECKPOINT)")
    seeds = [episode_seed_base + i for i in range(episodes)]
    return EvaluationPlan(policies=specs, shifts=shifts, episode_seeds=seeds)


def check_distinct_checkpoints(specs: list[PolicySpec]) -> None:
    """Every checkpoint file of a request must have contents of its own (SHA-256): one checkpoint given under
    two policy names ran twice and was reported as two policies with the same results (and compared with itself);
    a copy of one file under two names within a policy counted as two training seeds."""
    seen: dict[str, tuple[str, str]] = {}  # SHA-256 -> (policy, file) where it was first given
    for spec in specs:
        for path, sha in zip(spec.checkpoints, spec.checkpoint_sha):
            if sha in seen:
                policy, first = seen[sha]
                where = f"policy {spec.name!r}" if policy == spec.name else f"policies {policy!r} and {spec.name!r}"
                raise EvaluationSetupError(
                    f"--policy: {path} has the same contents as {first} (SHA-256 {sha[:16]}...), given for {where}: "
                    "one checkpoint would be reported twice, as if it were two; give it once"
                )
            seen[sha] = (spec.name, path)


def check_policy_name(name: str, checkpoints=(), origin: str = "the config name") -> None:
    """A policy name must be usable as a file name, a report cell and an item of --paired A,B (a name with a
    slash stopped the report at its figures, after every episode had run; one with ../ wrote them outside --out).
    ``checkpoints``: given when the name is not the user's (no NAME=) but ``origin`` in the first of them."""
    if not POLICY_NAME.fullmatch(name):
        where = f" ({origin} in {checkpoints[0]}; give one with NAME=CHECKPOINT)" if checkpoints else ""
        raise EvaluationSetupError(
            f"policy name {name!r}{where}: use letters, digits and _ . + - only, starting with a letter or digit "
            "(it names report files and is an item of --paired A,B)"
        )


def parse_pairs(items: list[str], policies: list[str]) -> list[tuple[str, str]]:
    """`--paired A,B` arguments -> [(A, B)], each name one of `policies` (errors name the argument); a pair
    given again, or reversed, is kept once (`unique_pairs`)."""
    pairs = []
    for item in items:
        names = [n.strip() for n in item.split(",")]
        if len(names) != 2 or not all(names):
            raise EvaluationSetupError(f"--paired {item!r}: expected two policy names A,B")
        if names[0] == names[1]:
            raise EvaluationSetupError(f"--paired {item!r}: a policy against itself; name two different policies")
        missing = [n for n in names if n not in policies]
        if missing:
            raise EvaluationSetupError(
                f"--paired {item!r}: no policy named {missing[0]!r} (policies: {', '.join(policies)})"
            )
        pairs.append((names[0], names[1]))
    return unique_pairs(pairs)


def unique_pairs(pairs) -> list[tuple[str, str]]:
    """``pairs`` without repeats, (B, A) being the same comparison as (A, B): the first orientation kept, in
    order (a comparison given twice was tested twice, and counted twice in the Holm correction)."""
    seen, out = set(), []
    for a, b in pairs:
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append((a, b))
    return out
