"""Writing an audit: ``report.json`` (every figure), ``report.md`` (tables + SVG charts) and the
summary table the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worldflux_gym.audit import svg
from worldflux_gym.audit.ranking import Ranking
from worldflux_gym.audit.results import AuditResult, ScenarioResult
from worldflux_gym.core.checkpoint import atomic_write_files
from worldflux_gym.core.paths import check_not_replacing, check_output_dir
from worldflux_gym.core.tables import text_table

REPORT_JSON, REPORT_MD = "report.json", "report.md"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _interval(s: ScenarioResult) -> str:
    i = s.interval
    return f"{i.mean:.1f} [{i.low:.1f}, {i.high:.1f}]"


def summary_rows(result: AuditResult) -> list[tuple[str, ...]]:
    """One row per scenario (and one for the real replay): the figures of the CLI's table."""
    rows = [
        ("scenario", "episodes", "return [95% CI]", "length", "unsure steps", "return unsure",
         "reward > real max", "flag"),
    ]  # fmt: skip
    for s in result.scenarios.values():
        rows.append(
            (
                s.name,
                str(len(s.returns)),
                _interval(s),
                f"{s.lengths.mean():.0f}",
                _pct(s.unsure_share),
                _pct(s.return_share_unsure),
                _pct(s.reward_above_real_share),
                _flag(s.flag_reason),
            )
        )
    if result.real is not None:
        r = result.real.real_interval
        rows.append(
            (
                f"real {result.real.env_id}",
                str(len(result.real.real_returns)),
                f"{r.mean:.1f} [{r.low:.1f}, {r.high:.1f}]",
                "",
                "",
                "",
                "",
                "",
            )
        )
    return rows


def _flag(reason: str | None) -> str:
    return "" if reason is None else f"FLAG: {reason}"


def summary_text(result: AuditResult) -> str:
    lines = [
        f"audit of {result.agent} in {result.dream_id or result.checkpoint}",
        text_table(summary_rows(result)),
    ]
    if result.real is not None:
        g = result.real.gap_interval
        lines.append(f"dream - real return per episode: {g.mean:.1f} [{g.low:.1f}, {g.high:.1f}]")
    lines.append(result.verdict())
    return "\n".join(lines)


def _markdown_table(rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows[1:]]
    return lines


def figures(result: AuditResult) -> dict[str, str]:
    """The report's charts, ``file name -> SVG``."""
    charts = {}
    series = {name: s.returns for name, s in result.scenarios.items() if name != "adversarial"}
    if result.real is not None:
        series[f"real {result.real.env_id}"] = result.real.real_returns
    charts["returns.svg"] = svg.histogram(series, "Return distribution per scenario", "episode return")
    nominal = result.nominal
    if nominal.uncertainty_per_step is not None and result.calibration is not None:
        charts["uncertainty.svg"] = svg.line_chart(
            {
                "mean over live episodes": nominal.uncertainty_per_step["mean"],
                "90th percentile": nominal.uncertainty_per_step["q90"],
            },
            "Model uncertainty over time (nominal scenario)",
            "dream step",
            "disagreement (ensemble members or uncertainty heads)",
            reference=(
                f"unsure threshold (real q{result.calibration.quantile:.0%})",
                result.calibration.threshold,
            ),
        )
    if result.real is not None:
        charts["dream_vs_real.svg"] = svg.scatter(
            {"episode (same start)": (result.real.real_returns, result.real.dream_returns)},
            "Dream vs real return per episode",
            "real return",
            "dream return",
        )
    return charts


def record_videos(result: AuditResult, out: Path, count: int) -> str:
    """Videos of the ``count`` worst nominal episodes through ``worldflux_gym.video.record_dream``.

    A nominal start is a seeded real reset, which is exactly what ``record_dream(seed=...)`` starts
    from; with a real replay the real env is drawn beside the dream. The dream in the video is a new
    draw of the stochastic dream from the same start, not a replay of the audited episode.
    Adversarial starts are perturbed observations that ``record_dream`` cannot start from: they are
    listed with their numbers. Returns a sentence for the report; videos go into each worst case.
    """
    if count <= 0:
        return "No videos asked for (videos=0)."
    try:
        from worldflux_gym.video import record_dream
    except ImportError:
        return (
            "No videos: `worldflux_gym.video` is not available in this installation; the worst cases are "
            "listed by their start observations (nominal ones also by the real reset seed)."
        )
    if result.agent_path is None:
        return "No videos: record_dream needs the agent as an SB3 .zip, and this agent is a callable."
    made, failed = 0, []
    cases = [c for c in result.worst_cases if c["scenario"] == "nominal" and c["seed"] is not None][:count]
    for rank, case in enumerate(cases, start=1):
        path = out / f"worst_{rank}_seed{case['seed']}.mp4"
        try:
            record_dream(
                result.dream_id or result.checkpoint,
                path,
                agent=result.agent_path,
                steps=int(result.nominal.lengths.max()),
                compare=result.real is not None,
                checkpoint=result.checkpoint if result.dream_id else None,
                seed=int(case["seed"]),
                real_env=None if result.dream_id else result.real_env,
                overwrite=True,  # the report's own videos: replacing the report was allowed
            )
        except Exception as err:  # a video is a convenience: report why it is missing, keep the audit
            failed.append(f"seed {case['seed']}: {type(err).__name__}: {err}")
            continue
        case["video"] = path.name
        made += 1
    note = f"{made} video(s) of the worst nominal starts (record_dream from the same real reset seed"
    note += ", real env beside the dream)." if result.real is not None else ")."
    if failed:
        note += " Not recorded: " + "; ".join(failed)
    return note + " Adversarial starts are perturbed observations: listed by their numbers only."


def check_report_dir(
    out: str | Path, overwrite: bool = False, agents: list[str] | None = None, name: str = "out"
) -> Path:
    """``out`` can take a report: a folder that can be written, and one that holds no report yet
    unless ``overwrite`` (a ranking also writes ``out/<agent>/``: give the agents' names)."""
    out = check_output_dir(out, name)
    reports = [out / REPORT_JSON, out / REPORT_MD]
    reports += [out / agent / f for agent in agents or [] for f in (REPORT_JSON, REPORT_MD)]
    check_not_replacing(reports, name, out, "a report", overwrite)
    return out


def write_report(result: AuditResult, out: str | Path, videos: int = 0, overwrite: bool = False) -> Path:
    """Write ``report.json``, ``report.md`` and the SVG charts into ``out`` (created); returns ``out``.

    ``videos``: record that many of the worst nominal episodes (see :func:`record_videos`).
    A folder that already holds a report is refused unless ``overwrite``.
    """
    out = check_report_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    charts = figures(result)
    video_note = record_videos(result, out, videos)
    data = result.as_dict()
    data["figures"] = sorted(charts)
    data["videos"] = video_note
    horizon = result.config.horizon or result.nominal.lengths.max()
    md = [
        f"# Audit of `{result.agent}` in `{result.dream_id or result.checkpoint}`",
        "",
        f"**{result.verdict()}**",
        "",
        f"- checkpoint: `{result.checkpoint}`",
        f"- real env: `{result.real_env}`; dream horizon {horizon} steps",
        f"- confidence intervals: {result.nominal.interval.method}, {result.config.confidence:.0%}"
        + (
            " (deterministic dream: they cover the spread of starts only, not the model's error)"
            if result.config.deterministic
            else ""
        ),
        f"- audit took {result.seconds:.1f} s",
        "",
        "## Scenarios",
        "",
        *_markdown_table(summary_rows(result)),
        "",
        "*unsure steps*: share of dreamed steps whose model uncertainty exceeds the threshold below. "
        "*return unsure*: share of the return (each reward counted above the lowest real reward) "
        "earned on those steps. *reward > real max*: share of steps paid more than any real step in the "
        "data. *FLAG: exploitation*: return unsure > "
        f"{result.config.flag_share:.0%} and > unsure steps (the agent earns more there than elsewhere). "
        f"*FLAG: off the data*: unsure steps > {result.config.off_data_share:.0%}."
        + (
            f" *FLAG: overrated in reality* (the verdict, from the real replay below): dream - real per "
            f"episode above 0 beyond chance and on average > {result.config.overrate_share:.0%} of the "
            "real return."
            if result.real is not None
            else ""
        ),
        "",
    ]
    for s in result.scenarios.values():
        md.append(f"- `{s.name}`: {s.description}")
    md.append("")
    if result.calibration is not None:
        c = result.calibration
        md += [
            "## Uncertainty threshold",
            "",
            f"{c.threshold:.4g} = the {c.quantile:.0%} quantile of the model's one-step uncertainty on "
            f"{c.transitions} real transitions from {c.source}; by construction "
            f"{1 - c.quantile:.0%} of real steps exceed it. Real-data quantiles: "
            + ", ".join(f"{k} {v:.4g}" for k, v in c.real_quantiles.items())
            + f". Real rewards: {c.reward_floor:.4g} to {c.reward_ceiling:.4g}.",
            "",
        ]
    if result.real is not None:
        r = result.real
        g = r.gap_interval
        replayed = len(r.real_returns)
        which = ""
        if replayed < len(result.nominal.returns):
            which = f"the first {replayed} of the dreamed starts, "
        md += [
            f"## Dream vs real ({r.env_id})",
            "",
            f"Starts replayed ({which}with: {r.method}); start reproduced (to 1e-4) in "
            f"{r.start_reproduced.mean():.0%} of episodes. Real return {r.real_interval.mean:.1f} "
            f"[{r.real_interval.low:.1f}, {r.real_interval.high:.1f}]; dream - real per episode "
            f"{g.mean:.1f} [{g.low:.1f}, {g.high:.1f}]; per-episode correlation "
            f"{_num(r.episode_correlation, 2)}. Median episode length: dream "
            f"{np.median(r.dream_lengths):.0f}, real {np.median(r.real_lengths):.0f} steps.",
            "",
            "| episode | dream return | real return | gap | dream length | real length |",
            "|---|---|---|---|---|---|",
        ]
        for i in range(min(20, len(r.real_returns))):
            md.append(
                f"| {i} | {r.dream_returns[i]:.1f} | {r.real_returns[i]:.1f} | {r.gaps[i]:.1f} "
                f"| {r.dream_lengths[i]} | {r.real_lengths[i]} |"
            )
        if len(r.real_returns) > 20:
            md.append(f"| ... | | | | | ({len(r.real_returns)} episodes in report.json) |")
        md.append("")
    if result.worst_cases:
        header = "| scenario | start | dream return | real return | unsure steps | start obs | video |"
        md += ["## Worst cases", "", header, "|---|---|---|---|---|---|---|"]
        for case in result.worst_cases:
            start = case.get("start", case.get("base_start"))
            obs = ", ".join(f"{v:.3g}" for v in case["start_obs"])
            md.append(
                f"| {case['scenario']} | {start} | {case['dream_return']:.1f} | "
                f"{_num(case.get('real_return'))} | {_pct(case.get('unsure_share'))} | {obs} | "
                + (f"[{case['video']}]({case['video']})" if case.get("video") else "")
                + " |"
            )
        md += ["", video_note, ""]
    if charts:
        md += ["## Figures", ""] + [f"![{name}]({name})" for name in sorted(charts)] + [""]
    if result.notes:
        md += ["## Notes", ""] + [f"- {note}" for note in result.notes] + [""]
    files = {REPORT_JSON: (json.dumps(data, indent=2) + "\n").encode(), REPORT_MD: "\n".join(md).encode()}
    files.update({name: text.encode() for name, text in charts.items()})
    atomic_write_files(out, files)
    return out


def ranking_text(ranking: Ranking) -> str:
    spread = ranking.model_spread
    models = 1 if spread is None else len(ranking.dream_means_per_model)
    dream_header = "dream return [95% CI]" if spread is None else f"dream return (sd over {models} models)"
    rows = [("rank", "agent", dream_header, "real return", "median length", "unsure steps", "flag")]
    for rank, i in enumerate(ranking.order(), start=1):
        audit = ranking.audits[i]
        dream = _interval(audit.nominal)
        if spread is not None:
            dream = f"{ranking.dream_means[i]:.1f} ({spread[i]:.1f})"
        real = "" if ranking.real_means is None else f"{ranking.real_means[i]:.1f}"
        length = f"{np.median(audit.nominal.lengths):.0f}"
        if audit.real is not None:  # dream / real: where a dream's episodes end too early or too late
            length += f" / {np.median(audit.real.real_lengths):.0f}"
        rows.append(
            (str(rank), ranking.names[i], dream, real, length,
             _pct(audit.nominal.unsure_share), _flag(audit.flag_reason))
        )  # fmt: skip
    text = text_table(rows)
    if spread is not None:
        text += (
            f"\nDream return: the mean over {models} fitted models; lengths, unsure steps and flags: the "
            "first model's. Where the sd is large against the gap to the next agent, the order is not "
            "settled."
        )
    if ranking.spearman is not None:
        text += (
            f"\nSpearman rank correlation dream vs real: {ranking.spearman:.3f}; mean |dream - real| "
            f"{ranking.mean_absolute_error:.1f} ({_pct(ranking.relative_error)} of the real spread)"
        )
    if ranking.real_split_half_spearman is not None:
        text += (
            "\nReproducibility of the real ranking (Spearman between two random halves of the real "
            f"episodes, median of 1000 splits): {ranking.real_split_half_spearman:.3f}"
        )
    if ranking.dream_split_half_spearman is not None:
        text += (
            "\nReproducibility of the dream ranking (the same, two halves of the dreamed episodes): "
            f"{ranking.dream_split_half_spearman:.3f}"
        )
        real = ranking.real_split_half_spearman
        if real is not None and ranking.dream_split_half_spearman < real:
            text += (
                ": below the real figure, the dream's own sampling noise reorders agents (dream more "
                "episodes)"
            )
    return text


def write_ranking_report(ranking: Ranking, out: str | Path, videos: int = 0, overwrite: bool = False) -> Path:
    """Each agent's report in ``out/<agent>/``, and the ranking in ``out/report.{json,md}``.

    A folder that already holds a ranking or an agent's report is refused unless ``overwrite``."""
    out = check_report_dir(out, overwrite, [audit.agent for audit in ranking.audits])
    for audit in ranking.audits:
        write_report(audit, out / audit.agent, videos=videos, overwrite=overwrite)
    charts = {}
    if ranking.real_means is not None:
        charts["ranking.svg"] = svg.scatter(
            {"agent": (ranking.real_means, ranking.dream_means)},
            "Mean return per agent: dream vs real",
            "real return",
            "dream return",
            labels=ranking.names,
        )
    data = ranking.as_dict()
    data["figures"] = sorted(charts)
    md = ["# Ranking by dream return", "", "```", ranking_text(ranking), "```", ""]
    md += [f"- [{a.agent}]({a.agent}/report.md): {a.verdict()}" for a in ranking.audits] + [""]
    md += [f"![{name}]({name})" for name in sorted(charts)]
    files = {REPORT_JSON: (json.dumps(data, indent=2) + "\n").encode(), REPORT_MD: "\n".join(md).encode()}
    files.update({name: text.encode() for name, text in charts.items()})
    atomic_write_files(out, files)
    return out
