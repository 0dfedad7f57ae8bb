"""The ``worldflux-gym`` command. Each subcommand is one ``add_parser`` block and one handler.

The defaults the options show and use are the library's own, read from its config dataclasses and
function signatures (:func:`_defaults`), never restated here, so that the CLI and the Python API
cannot drift apart: building the parser imports those modules (stable-baselines3 with them, not
moviepy or pygame); what a command runs is imported by its handler. Tables are drawn by ``rich``
(:mod:`worldflux_gym.core.tables`); the library's progress messages are ``logging`` records, which
a command shows on standard error (INFO and above).

Bad input ends in one line, never a traceback: numbers are checked as they are parsed (the argument
types below use the same checks as the Python API, :mod:`worldflux_gym.core.validate`), devices,
env ids and output paths at the start of each handler (before any work), and every
:class:`WorldFluxError` from deeper down is printed as ``worldflux-gym CMD: error: ...`` with exit
code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worldflux_gym.core.errors import ConfigError, WorldFluxError
from worldflux_gym.core.paths import check_output_dir, check_output_file
from worldflux_gym.core.tables import print_table
from worldflux_gym.core.validate import (
    check_float,
    check_int,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from worldflux_gym.version import __version__


# --- argument types: the Python API's checks, as argparse types --------------------------------
def _arg_type(check, parse=int, kind: str = "an integer"):
    """An argparse ``type`` that parses with ``parse`` and checks with ``check(value, name)``; argparse
    turns the ``ArgumentTypeError`` into ``error: argument --steps: must be ...`` and exit code 2."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        try:
            return check(value, "")
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err).strip()) from None

    convert.__name__ = kind
    return convert


def _fraction(value: float, name: str) -> float:
    value = check_float(value, name, minimum=0.0)
    if value >= 1.0:
        raise ConfigError(f"{name} must be a finite number >= 0 and < 1, got {value}")
    return value


POSITIVE = _arg_type(check_positive_int)
NON_NEGATIVE = _arg_type(lambda v, n: check_int(v, n, minimum=0))
SEED = _arg_type(check_seed)
POSITIVE_FLOAT = _arg_type(check_positive_float, float, "a number")
NON_NEGATIVE_FLOAT = _arg_type(lambda v, n: check_float(v, n, minimum=0.0), float, "a number")
FRACTION = _arg_type(_fraction, float, "a number")
SHARE = _arg_type(lambda v, n: check_float(v, n, minimum=0.0, maximum=1.0), float, "a number")

AUDIT_VIDEOS = 3  # the CLI's own choice: `audit` records the 3 worst episodes (write_report: 0 by default)


def _option(
    parser: argparse.ArgumentParser, flag: str, kind: Any, default: Any, help: str | None = None
) -> None:
    """``flag`` with the library's ``default``, which its help shows."""
    shown = f"{help} (default %(default)s)" if help else "default %(default)s"
    parser.add_argument(flag, type=kind, default=default, help=shown)


def _defaults(source: type | Callable[..., Any]) -> dict[str, Any]:
    """The library's defaults: a config dataclass's field defaults, or a function's keyword defaults."""
    if dataclasses.is_dataclass(source):
        return {f.name: f.default for f in dataclasses.fields(source) if f.default is not dataclasses.MISSING}
    parameters = inspect.signature(source).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _device(args: argparse.Namespace) -> None:
    """``--device``, checked before any work (an unknown name or a device this machine lacks)."""
    from worldflux_gym.core.device import resolve_device

    resolve_device(args.device, "--device")


def _catalog(args: argparse.Namespace) -> int:
    from worldflux_gym.core.registry import catalog

    rows = [("model", "maturity", "parameters", "description")]
    rows += [(e.name, e.maturity, f"{e.parameters:,}", e.description) for e in catalog()]
    print_table(rows)
    return 0


def _list(args: argparse.Namespace) -> int:
    from worldflux_gym.dream.registration import load_specs

    rows = [("id", "real env", "family", "weights")]
    rows += [
        (s.id, s.real_env, f"{s.family}:{s.preset}", "present" if s.weights_present else "missing")
        for spec in load_specs()
        for s in spec.with_variants()
    ]
    print_table(rows)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from worldflux_gym.data import collect_to_store

    check_output_dir(args.out, "--out")
    store = collect_to_store(
        args.env_id,
        args.steps,
        args.out,
        policy=args.policy,
        algo=args.algo,
        seed=args.seed,
        num_envs=args.num_envs,
        image_size=args.image_size,
        validation_fraction=args.validation_fraction,
    )
    from worldflux_gym.data.collect import job_name

    job_steps, _ = store.job_progress(job_name(args.policy), args.seed)
    print(
        f"{store.directory}: {store.num_episodes('train')} train + {store.num_episodes('validation')} "
        f"validation episodes, {store.num_steps():,} steps of {store.env_id} ({job_steps:,} collected "
        f"by this policy and seed, of --steps {args.steps:,})"
    )
    return 0


def _parse_overrides(pairs: Sequence[str]) -> dict:
    """``["hidden=64", "name=x"]`` -> ``{"hidden": 64, "name": "x"}``: values are JSON when they parse."""
    import json

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            from worldflux_gym.core.errors import ConfigError

            raise ConfigError(f"--set expects KEY=VALUE (a model config field), got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _check_overrides(model: str, overrides: dict) -> None:
    """``--set`` values have the type of the config field they set (``hidden=abc`` is refused now)."""
    from worldflux_gym.core.registry import build_config, parse_name

    family, preset = parse_name(model)
    try:
        build_config(family, preset, overrides)
    except ConfigError as err:
        raise ConfigError(f"--set: {err}") from None


def _fit(args: argparse.Namespace) -> int:
    from worldflux_gym.training import fit_world_model, trainer_state

    _device(args)
    check_output_dir(args.out, "--out")
    overrides = _parse_overrides(args.set)
    _check_overrides(args.model, overrides)
    trainer = {
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "validate_every": args.validate_every,
        "checkpoint_every": args.checkpoint_every,
    }
    fit_world_model(
        args.env_id,
        args.model,
        args.out,
        data_dir=args.data,
        steps=args.steps,
        collect_steps=args.collect_steps,
        seed=args.seed,
        device=args.device,
        trainer=trainer,
        policy=args.policy,
        num_envs=args.num_envs,
        image_size=args.image_size,
        **overrides,
    )
    print(
        f"{args.out}: {args.model} fitted for {trainer_state(args.out)['step']} updates; load it with "
        f"worldflux_gym.from_pretrained({str(args.out)!r})"
    )
    return 0


def _fine_tune(args: argparse.Namespace) -> int:
    from worldflux_gym.pipelines import ClosedLoopConfig, fine_tune_closed_loop
    from worldflux_gym.pipelines.closed_loop import closed_loop_record

    _device(args)
    check_output_dir(args.out, "--out")
    config = ClosedLoopConfig(
        horizon=args.horizon,
        updates=args.updates,
        seed=args.seed,
        noise_scale=args.noise_scale,
        recent_share=args.recent_share,
        recent_from=args.recent_from,
    )
    fine_tune_closed_loop(args.run, args.policy, args.out, config, device=args.device, store=args.data)
    error = closed_loop_record(args.out)["held_out_closed_loop_error"]
    held_out = (
        f"held-out closed-loop error {error['before']:.3f} -> {error['after']:.3f}"
        if error["before"] is not None
        else "no held-out episode of these policies to measure it on"
    )
    print(
        f"{args.out}: fine-tuned closed loop under {len(args.policy)} behaviour policies; {held_out}. "
        f"Dream or audit with it: --checkpoint {args.out}"
    )
    return 0


def _train_agent(args: argparse.Namespace) -> int:
    from worldflux_gym.agents import train_agent
    from worldflux_gym.data.policy import read_sidecar

    check_output_file(args.out, "--out", overwrite=args.overwrite, what="agent")
    train_agent(
        args.dream_id,
        args.out,
        recipe=args.recipe,
        steps=args.steps,
        checkpoint=args.checkpoint,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    summary = read_sidecar(args.out)
    print(
        f"trained {summary['algorithm']} ({summary['recipe']}) for {summary['steps']:,} dreamed steps in "
        f"{summary['train_seconds']:.0f} s ({summary['fps']:,.0f} steps/s); saved {args.out}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from worldflux_gym.agents import evaluate_agent

    if args.env is not None:
        from worldflux_gym.core.envs import check_env_id

        check_env_id(args.env, "--env")
    result = evaluate_agent(
        args.agent, env_id=args.env, episodes=args.episodes, seed=args.seed, algo=args.algo
    )
    print(result.summary())
    return 0


def _dyna(args: argparse.Namespace) -> int:
    from worldflux_gym.pipelines.dyna import DynaConfig, run_dyna

    _device(args)
    check_output_dir(args.out, "--out")
    config = DynaConfig(
        real_steps=args.real_steps,
        recipe=args.recipe,
        initial_steps=args.initial_steps,
        steps_per_round=args.steps_per_round,
        fit_steps_per_round=args.fit_steps,
        agent_steps_per_round=args.agent_steps,
        initial_agent_steps=args.initial_agent_steps,
        starts=args.starts,
        dream_horizon=args.dream_horizon,
        own_share=args.own_share,
        eval_episodes=args.eval_episodes,
        prior_model=args.prior_model,
        prior_data=args.prior_data,
        seed=args.seed,
        device=args.device,
    )
    record = run_dyna(args.env_id, args.model, args.out, config)

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    rows = [("round", "real steps", "collected return", "evaluation")]
    for r in record["rounds"]:
        returns = shown(r["real_return"]), shown(r.get("eval_return"))
        rows.append((str(r["round"]), str(r["real_steps"]), *returns))
    print_table(rows, right=(0, 1, 2, 3))
    if "best" in record:
        best = record["best"]
        print(f"best evaluation: round {best['round']}, {best['eval_return']:.1f}: {args.out}/best_agent.zip")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from worldflux_gym.audit import audit_agent, rank_agents, summary_text, write_ranking_report, write_report
    from worldflux_gym.audit.report import check_report_dir, ranking_text

    checkpoints = args.checkpoint or []
    if args.real_episodes is not None and args.real is None:
        raise ConfigError("--real-episodes says how many starts to replay in the real env: add --real")
    if args.real:
        from worldflux_gym.core.envs import check_env_id

        check_env_id(args.real, "--real")
    ranked = len(args.agent) > 1 or len(checkpoints) > 1
    agent_names = [Path(a).stem for a in args.agent] if ranked else None
    check_report_dir(args.out, args.overwrite, agent_names, name="--out")  # before the audit runs
    options = {
        "real": (args.real or True) if args.real is not None else False,  # bare --real: the dream's env
        "episodes": args.episodes,
        "real_episodes": args.real_episodes,
        "horizon": args.horizon,
        "seed": args.seed,
        "what_if": not args.no_what_if,
        "deterministic": args.deterministic,
    }
    one_model = {"checkpoint": checkpoints[0] if checkpoints else None}
    if len(args.agent) == 1 and len(checkpoints) <= 1:
        result = audit_agent(args.agent[0], args.dream_id, **one_model, **options)
        write_report(result, args.out, videos=args.videos, overwrite=args.overwrite)
        print(summary_text(result))
    else:
        models = {"checkpoints": checkpoints} if len(checkpoints) > 1 else one_model
        ranking = rank_agents(args.agent, args.dream_id, **models, **options)
        write_ranking_report(ranking, args.out, videos=args.videos, overwrite=args.overwrite)
        print(ranking_text(ranking))
    print(f"report: {args.out}/report.md, every figure in {args.out}/report.json")
    return 0


def _video(args: argparse.Namespace) -> int:
    from worldflux_gym.video import record_dream

    check_output_file(args.out, "--out", overwrite=args.overwrite, what="video")
    path = record_dream(
        args.dream_id,
        args.out,
        agent=args.agent,
        steps=args.steps,
        compare=args.compare,
        checkpoint=args.checkpoint,
        seed=args.seed,
        real_env=args.real_env,
        fps=args.fps,
        width=args.size,
        height=args.size,
        shadows=args.shadows,
        reflections=args.reflections,
        antialias=args.antialias,
        overwrite=args.overwrite,
    )
    print(
        f"{path}: {args.steps} frames of {args.dream_id}" + (" beside the real env" if args.compare else "")
    )
    return 0


def _play(args: argparse.Namespace) -> int:
    from worldflux_gym.video.play import play

    log = play(
        args.dream_id,
        checkpoint=args.checkpoint,
        real_env=args.real_env,
        seed=args.seed,
        max_frames=args.max_frames,
        fps=args.fps,
        width=args.size,
        height=args.size,
    )
    steps = {world: len(actions) for world, actions in log.actions.items()}
    print(f"played {log.frames} frames: {steps['dream']} dream steps, {steps['real']} real steps")
    return 0


TRUSTED = "an SB3 .zip is code (SB3 unpickles it): load only agents you trust"


def build_parser() -> argparse.ArgumentParser:
    # the defaults below are the library's (see the module docstring)
    from worldflux_gym.agents import evaluate_agent, train_agent
    from worldflux_gym.audit.results import AuditConfig
    from worldflux_gym.data.collect import collect_to_store
    from worldflux_gym.dream.frames import MUJOCO_VIEW_SIZE
    from worldflux_gym.dream.render import PIXEL_VIEW_SIZE
    from worldflux_gym.pipelines import ClosedLoopConfig, DynaConfig, fine_tune_closed_loop
    from worldflux_gym.training import TrainerConfig, fit_world_model
    from worldflux_gym.training.trainer import FALLBACK_BATCH_SIZE, FALLBACK_LEARNING_RATE, FALLBACK_WINDOWS
    from worldflux_gym.video.play import play
    from worldflux_gym.video.record import record_dream

    parser = argparse.ArgumentParser(
        prog="worldflux-gym",
        description="Learned world models as Gymnasium dream environments: collect, fit, dream, audit.",
    )
    parser.add_argument("--version", action="version", version=f"worldflux-gym {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("catalog", help="list every world-model family:preset with its size")
    p.set_defaults(handler=_catalog)

    p = commands.add_parser("list", help="list the dream env ids, their real env, family and weights")
    p.set_defaults(handler=_list)

    p = commands.add_parser(
        "collect", help="collect real episodes from a Gymnasium env into an episode store"
    )
    p.add_argument("env_id", metavar="ENV_ID", help="Gymnasium env id, e.g. Walker2d-v5")
    p.add_argument(
        "--steps", type=POSITIVE, required=True,
        help="the total env steps the store should hold from this policy and seed: a rerun of the "
        "same command (e.g. after an interruption) finishes the job and adds nothing more; another "
        "--policy or --seed is another job with its own total",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="episode store directory (created, or extended)")
    collect = _defaults(collect_to_store)
    p.add_argument(
        "--policy", help=f"a stable-baselines3 model .zip to act with (default: random actions; {TRUSTED})"
    )
    p.add_argument("--algo", help="SB3 algorithm of --policy (PPO, SAC, ...) when it cannot be detected")
    _option(p, "--seed", SEED, collect["seed"])
    _option(p, "--num-envs", POSITIVE, collect["num_envs"], "envs stepped together (Gymnasium vector env)")
    p.add_argument("--image-size", type=POSITIVE, help="observe rendered frames resized to SIZE x SIZE")
    _option(p, "--validation-fraction", FRACTION, collect["validation_fraction"], "episodes held out")
    p.set_defaults(handler=_collect)

    p = commands.add_parser(
        "fit", help="fit a world model on episodes (collected first when --data is not given)"
    )
    p.add_argument("env_id", metavar="ENV_ID", help="Gymnasium env id the data comes from")
    p.add_argument("--model", required=True, help="FAMILY:PRESET, see `worldflux-gym catalog`")
    p.add_argument(
        "--out", required=True, help="run directory: the fitted model, loadable by from_pretrained"
    )
    p.add_argument("--data", help="episode store to fit on (default: collect into OUT/data)")
    fit, trainer = _defaults(fit_world_model), _defaults(TrainerConfig)
    _option(p, "--steps", POSITIVE, fit["steps"], "gradient updates (a rerun resumes up to this)")
    _option(p, "--collect-steps", POSITIVE, fit["collect_steps"], "env steps to collect without --data")
    p.add_argument("--policy", help=f"SB3 .zip to collect with (default: random actions; {TRUSTED})")
    _option(p, "--num-envs", POSITIVE, fit["num_envs"])
    p.add_argument("--image-size", type=POSITIVE, help="collect rendered frames of SIZE x SIZE")
    p.add_argument(
        "--batch-size",
        type=POSITIVE,
        help=f"default: the model's, else {FALLBACK_BATCH_SIZE} ({FALLBACK_WINDOWS} windows)",
    )
    p.add_argument(
        "--lr",
        type=POSITIVE_FLOAT,
        help=f"AdamW learning rate (default: the model's, else {FALLBACK_LEARNING_RATE:g})",
    )
    _option(p, "--validate-every", POSITIVE, trainer["validate_every"], "updates between validations")
    _option(p, "--checkpoint-every", POSITIVE, trainer["checkpoint_every"], "updates between checkpoints")
    p.add_argument("--device", default=fit["device"], help="auto, cpu, cuda, cuda:1 ...")
    _option(p, "--seed", SEED, fit["seed"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    p.set_defaults(handler=_fit)

    p = commands.add_parser(
        "fine-tune",
        help="fine-tune a fitted ensemble closed loop under the deterministic policies that logged its data",
    )
    p.add_argument(
        "run",
        metavar="RUN",
        help="a run directory of `worldflux-gym fit` (ensemble family), or of an earlier fine-tune",
    )
    closed_loop = _defaults(ClosedLoopConfig)
    p.add_argument(
        "--policy",
        nargs="+",
        required=True,
        metavar="AGENT.zip",
        help=f"the SB3 agents that logged the data ({TRUSTED})",
    )
    p.add_argument("--out", required=True, help="new directory for the fine-tuned model (RUN is kept)")
    p.add_argument(
        "--data",
        metavar="STORE",
        help="episode store to tune on (default: RUN's); e.g. RUN's store with new episodes appended",
    )
    _option(
        p,
        "--recent-share",
        SHARE,
        closed_loop["recent_share"],
        "share of each batch of the model's own loss drawn from the train steps after --recent-from",
    )
    _option(
        p,
        "--recent-from",
        NON_NEGATIVE,
        closed_loop["recent_from"],
        "train steps of the store before its new episodes",
    )
    _option(p, "--horizon", POSITIVE, closed_loop["horizon"], "steps of each closed-loop rollout")
    _option(p, "--updates", POSITIVE, closed_loop["updates"])
    noise = "its sampled dreams use this x its std"
    _option(p, "--noise-scale", NON_NEGATIVE_FLOAT, closed_loop["noise_scale"], noise)
    p.add_argument(
        "--device", default=_defaults(fine_tune_closed_loop)["device"], help="auto, cpu, cuda, cuda:1 ..."
    )
    _option(p, "--seed", SEED, closed_loop["seed"])
    p.set_defaults(handler=_fine_tune)

    p = commands.add_parser("train-agent", help="train a stable-baselines3 agent inside a dream env")
    p.add_argument("dream_id", metavar="DREAM_ID", help="a WorldFlux/* id, see `worldflux-gym list`")
    p.add_argument("--recipe", help="agent recipe name (agents/*.json) or path; default: the env's own")
    p.add_argument("--steps", type=POSITIVE, help="dreamed agent steps (default: the recipe's)")
    p.add_argument("--checkpoint", help="a fitted run directory instead of the shipped weights")
    _option(p, "--seed", SEED, _defaults(train_agent)["seed"])
    p.add_argument("--out", required=True, help="where to save the agent (.zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an agent already at --out")
    p.set_defaults(handler=_train_agent)

    p = commands.add_parser("evaluate", help="evaluate an agent in the real env")
    evaluate = _defaults(evaluate_agent)
    p.add_argument("agent", metavar="AGENT.zip", help=f"a stable-baselines3 agent ({TRUSTED})")
    p.add_argument("--env", help="real env id (default: the one recorded when the agent was trained)")
    _option(p, "--episodes", POSITIVE, evaluate["episodes"])
    _option(p, "--seed", SEED, evaluate["seed"])
    p.add_argument("--algo", help="SB3 algorithm when it cannot be detected (PPO, SAC, ...)")
    p.set_defaults(handler=_evaluate)

    p = commands.add_parser(
        "dyna", help="collect, fit, train an agent in the dream, collect with it ... (resumable)"
    )
    p.add_argument("env_id", metavar="ENV_ID", help="the real Gymnasium env")
    p.add_argument("--model", required=True, help="FAMILY:PRESET, see `worldflux-gym catalog`")
    p.add_argument("--real-steps", type=POSITIVE, required=True, help="the real-env step budget")
    p.add_argument("--recipe", required=True, help="agent recipe name (agents/*.json) or path")
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    dyna = _defaults(DynaConfig)
    _option(p, "--initial-steps", NON_NEGATIVE, dyna["initial_steps"], "random-action warm-up steps")
    _option(p, "--steps-per-round", POSITIVE, dyna["steps_per_round"], "real steps collected per round")
    _option(p, "--fit-steps", POSITIVE, dyna["fit_steps_per_round"], "model updates per round")
    _option(p, "--agent-steps", POSITIVE, dyna["agent_steps_per_round"], "dreamed agent steps per round")
    _option(p, "--initial-agent-steps", POSITIVE, None, "dreamed agent steps in round 0 (or --agent-steps)")
    p.add_argument("--starts", choices=["branched", "reset"], default=dyna["starts"])
    _option(p, "--dream-horizon", POSITIVE, None, "dreamed episode length (or the recipe's, else 100)")
    _option(p, "--own-share", SHARE, dyna["own_share"], "share of fits and starts from the agents' data")
    _option(p, "--eval-episodes", NON_NEGATIVE, dyna["eval_episodes"], "real evaluation episodes per round")
    p.add_argument("--prior-model", help="a fitted run directory to start from (copied into --out)")
    p.add_argument("--prior-data", help="the episode store it was fitted on, if not its data/ (copied)")
    p.add_argument("--device", default=dyna["device"])
    _option(p, "--seed", SEED, dyna["seed"])
    p.set_defaults(handler=_dyna)

    p = commands.add_parser(
        "audit", help="audit agents in a dream: return with CI, model uncertainty, what-ifs, real replay"
    )
    audit = _defaults(AuditConfig)
    p.add_argument(
        "agent",
        nargs="+",
        metavar="AGENT",
        help=f"SB3 agent .zip (several: ranked by dream return; {TRUSTED})",
    )
    p.add_argument("dream_id", metavar="DREAM_ID", help="a WorldFlux/* id, see `worldflux-gym list`")
    _option(p, "--episodes", POSITIVE, audit["episodes"], "dreamed episodes from real starts")
    p.add_argument(
        "--real", nargs="?", const="", metavar="REAL_ID",
        help="replay the same starts in the real env (default: the dream's own real env)",
    )  # fmt: skip
    p.add_argument(
        "--real-episodes", type=POSITIVE, metavar="N",
        help="with --real: replay only the first N starts there (default: all --episodes); dreamed "
        "episodes are cheap, real ones are not",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint", nargs="+", metavar="RUN_DIR",
        help="a fitted run directory instead of the shipped weights; several (fits of the same model "
        "with other seeds): the dream return is their mean, and the ranking shows where they disagree",
    )  # fmt: skip
    p.add_argument(
        "--horizon", type=POSITIVE, help="dream steps per episode (default: the id's episode limit)"
    )
    _option(p, "--seed", SEED, audit["seed"])
    p.add_argument("--no-what-if", action="store_true", help="skip start/action noise and the CEM search")
    p.add_argument(
        "--deterministic", action="store_true",
        help="dream the model's mean transition with terminations at p > 0.5 (steadier over long "
        "horizons; by default the audit dreams as agents practise: sampled)",
    )  # fmt: skip
    _option(p, "--videos", NON_NEGATIVE, AUDIT_VIDEOS, "videos of the worst nominal episodes")
    p.add_argument("--out", required=True, help="report directory: report.md, report.json, SVG charts")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.set_defaults(handler=_audit)

    p = commands.add_parser(
        "video", help="record a dreamed rollout to .mp4/.gif (optionally beside the real env)"
    )
    p.add_argument(
        "dream_id", metavar="DREAM_ID", help="a WorldFlux/* id (or a checkpoint dir with --real-env)"
    )
    video = _defaults(record_dream)
    p.add_argument(
        "--agent", metavar="AGENT.zip", help=f"SB3 agent that acts (default: random actions; {TRUSTED})"
    )
    _option(p, "--steps", POSITIVE, video["steps"], "frames to record")
    p.add_argument("--checkpoint", help="a fitted run directory instead of the shipped weights")
    p.add_argument(
        "--compare", action="store_true", help="the real env beside the dream: same start, same actions"
    )
    p.add_argument("--real-env", help="the real env id (only for a checkpoint directory as DREAM_ID)")
    _option(p, "--seed", SEED, video["seed"], "the real reset the dream starts from")
    p.add_argument("--fps", type=POSITIVE_FLOAT, help="frame rate (default: the real env's)")
    p.add_argument(
        "--size",
        type=POSITIVE,
        help=f"panel size in pixels (MuJoCo and pixel models; default {MUJOCO_VIEW_SIZE}/{PIXEL_VIEW_SIZE})",
    )
    p.add_argument("--shadows", action="store_true", help="MuJoCo shadows (slower under software GL)")
    p.add_argument("--reflections", action="store_true", help="MuJoCo floor reflections (slower)")
    p.add_argument("--antialias", action="store_true", help="MuJoCo multisample antialiasing (slower)")
    p.add_argument("--out", required=True, help="the video file: .mp4 or .gif")
    p.add_argument("--overwrite", action="store_true", help="replace a video already at --out")
    p.set_defaults(handler=_video)

    p = commands.add_parser(
        "play", help="drive a dream with the keyboard in a window; TAB switches to the real env"
    )
    p.add_argument(
        "dream_id", metavar="DREAM_ID", help="a WorldFlux/* id (or a checkpoint dir with --real-env)"
    )
    p.add_argument("--checkpoint", help="a fitted run directory instead of the shipped weights")
    p.add_argument("--real-env", help="the real env id (only for a checkpoint directory as DREAM_ID)")
    _option(p, "--seed", SEED, _defaults(play)["seed"], "the first real reset")
    p.add_argument(
        "--fps",
        type=NON_NEGATIVE_FLOAT,
        help="frames per second (default: the real env's; 0: as fast as it goes)",
    )
    p.add_argument("--size", type=POSITIVE, help="frame size in pixels (MuJoCo and pixel models)")
    p.add_argument("--max-frames", type=POSITIVE, help="stop after this many frames (default: until ESC)")
    p.epilog = (
        "keys: arrows/1-9 act (Box: RIGHT/LEFT dim 0, UP/DOWN dim 1, k dim k-1, SHIFT+k its low bound; "
        "Discrete: k takes action k-1, LEFT/RIGHT 0/1), TAB dream/real, R new episode, ESC quit"
    )
    p.set_defaults(handler=_play)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        with _library_log():
            return int(args.handler(args) or 0)
    except WorldFluxError as err:
        print(f"worldflux-gym {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        # a file that went away or a disk that filled up during the run: the checks above cannot
        # foresee those. One line with the path, not a traceback.
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(
            f"worldflux-gym {args.command}: error: {err.strerror or _one_line(err)}{where}; check the "
            "path, its permissions and the free space, then run the command again",
            file=sys.stderr,
        )
        return 1


class _library_log:
    """While a command runs, the library's INFO log records (e.g. a Dyna round's figures) go to
    standard error as plain lines, like its progress bars."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("worldflux_gym")
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
