"""The report folder's summary (Markdown and HTML), the config snippet, and the plot's data.

The summary is built once as a list of blocks (heading, paragraph, code, table, image) and
rendered twice, so the Markdown and the HTML never disagree.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from inferd.tune.candidate import dump_toml
from inferd.tune.measurement import Measurement, cost_per_million
from inferd.tune.search import Objective, Trial, closest
from inferd.tune.space import Candidate, SearchSpace

SUMMARY_MD: Final = "summary.md"
SUMMARY_HTML: Final = "summary.html"
SNIPPET: Final = "recommended.toml"
FULL_CONFIG: Final = "recommended-model.toml"
PLOT: Final = "throughput_vs_p99.png"


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report says."""

    model_name: str
    model_path: Path
    objective: Objective
    headroom: float
    price_per_hour: float
    space: SearchSpace
    trials: tuple[tuple[int, Trial], ...]
    """(trial number, trial), in the order they ran."""
    best: Trial | None
    """The recommendation, with its confirmation's figures when it was confirmed."""
    status: str
    """How the search ended: finished, trial budget spent, interrupted."""
    compute_ms: dict[int, float]
    """Calibration: the model's compute per batch size (empty when skipped)."""
    plot_note: str | None = None
    """Why there is no plot (matplotlib missing), when there is none."""
    best_config: str | None = None
    """The whole ``model.toml`` the chosen trial served (None without a recommendation)."""
    unit: str = "inferences"
    """What throughput counts (an LLM's: output tokens)."""
    metric: str = "p99"
    """The latency the target bounds: p99, p99 TTFT or p99 ITL."""
    bench_flags: str = ""
    """``inferd bench`` flags that reproduce the trials' requests."""
    confirmations: dict[str, tuple[int, Measurement]] = field(default_factory=dict)
    """Candidate key -> the number and measurement of the trial that confirmed it (``trials``
    keep their own figures)."""
    confirm_s: float = 10.0
    """Measured seconds per confirmation step."""


@dataclass(frozen=True, slots=True)
class Block:
    """One piece of the summary: h1, h2, p, code, img (``text`` is the file), or table."""

    kind: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _p(text: str) -> Block:
    return Block("p", text)


def snippet(data: ReportData) -> str:
    """The recommended settings as ``model.toml`` text: the keys to set in the model's own."""
    if data.best is None:
        return "# inferd tune found no configuration that meets the target.\n"
    m = data.best.measurement
    provenance = textwrap.fill(
        _provenance(data, data.best) + ".", 98, initial_indent="# ", subsequent_indent="# "
    )
    header = (
        f"# inferd tune: {m.throughput:.0f} {data.unit}/s at {data.metric} {m.p99_ms:.2f} ms "
        f"(target {data.objective.slo_p99_ms:g} ms) with {m.concurrency} concurrent clients;\n"
        f"{provenance}\n"
        f"# Set these keys in {data.model_path / 'model.toml'}: top-level keys go before its "
        f"first [table].\n# The trials ran without SLO mode (slo_p99_ms) and [autoscaling]; "
        f"{FULL_CONFIG} is the whole file measured.\n"
    )
    return header + dump_toml(_nested(data.space, data.best.candidate))


def _nested(space: SearchSpace, candidate: Candidate) -> dict[str, object]:
    table: dict[str, object] = {}
    for name, value in candidate.items:
        *tables, key = space.dimension(name).toml_key.split(".")
        where = table
        for t in tables:
            where = where.setdefault(t, {})  # type: ignore[assignment]
        where[key] = value
    return table


def blocks(data: ReportData) -> list[Block]:
    """The summary, as blocks to render."""
    out = [Block("h1", f"inferd tune: {data.model_name}"), _p(_setting(data))]
    out += _recommendation(data)
    out += [Block("h2", f"Throughput against {data.metric}")]
    out += [_p(data.plot_note)] if data.plot_note else [Block("img", PLOT)]
    out += [Block("h2", "Every trial"), _trial_table(data), _p(_cost_note(data))]
    if data.compute_ms:
        out += [Block("h2", "Calibration"), _p(_calibration(data))]
    return out


def _setting(data: ReportData) -> str:
    o = data.objective
    budget = f"{o.memory_budget_mb:g} MiB" if o.memory_budget_mb is not None else "none"
    tried = len(data.trials)
    again = f" and {len(data.confirmations)} confirmation(s)" if data.confirmations else ""
    limit = o.slo_p99_ms * (1 - data.headroom)
    return (
        f"Model `{data.model_name}` at `{data.model_path}`. Target: {data.metric} ≤ "
        f"{o.slo_p99_ms:g} ms (a load step counts at ≤ {limit:.3g} ms, "
        f"{data.headroom:.0%} headroom for the noise of a later measurement). Memory budget: "
        f"{budget}. Search: {tried} trials of a {data.space.grid_size()}-point grid{again} "
        f"({data.status}). A confirmation serves the best trial's configuration again and "
        f"measures it for {data.confirm_s:g} s at its operating load, lower if it misses there; "
        f"a confirmed configuration is recommended with the confirmation's figures."
    )


def _recommendation(data: ReportData) -> list[Block]:
    best = data.best
    if best is None:
        return [Block("h2", "No recommendation"), _p(_no_recommendation(data))]
    m = best.measurement
    cost = _cost_text(data, best)
    if data.price_per_hour == 0:
        replica_h = cost_per_million(1.0, best.candidate.replicas(), m.throughput)
        cost = f"{replica_h:.3g} replica-hours (no price set: --price-per-hour)"
    check = (
        f"inferd bench http://127.0.0.1:8000 --model {data.model_name} --concurrency "
        f"{m.concurrency} --duration 30{data.bench_flags}"
    )
    return [
        Block("h2", "Recommendation"),
        _p(
            f"`{best.candidate.key()}`: {m.throughput:.1f} {data.unit}/s at {data.metric} "
            f"{m.p99_ms:.2f} ms with {m.concurrency} concurrent clients; {m.memory_mb:.0f} MiB; "
            f"{cost} per 1M {data.unit}; {_provenance(data, best)}."
        ),
        _p(f"Paste into the model's `model.toml` (also in `{SNIPPET}`):"),
        Block("code", snippet(data)),
        _p("Check it with the model served by that configuration:"),
        Block("code", check),
    ]


def _provenance(data: ReportData, best: Trial) -> str:
    """Where the recommendation's figures come from: its confirmation, or one trial alone."""
    origin = _search_trial(data, best.candidate)
    confirmation = data.confirmations.get(best.candidate.key())
    if origin is None or confirmation is None:
        return "measured once, in its trial (not confirmed)"
    (trial_number, trial), (number, _) = origin, confirmation
    m = trial.measurement
    return (
        f"confirmed by trial #{number} ({data.confirm_s:g} s per load step); unconfirmed, its "
        f"trial #{trial_number} measured {m.throughput:.1f} {data.unit}/s at {data.metric} "
        f"{m.p99_ms:.2f} ms with {m.concurrency} clients"
    )


def _no_recommendation(data: ReportData) -> str:
    if not data.confirmations:
        near = closest([t for _, t in data.trials], data.objective)
        why = f" The nearest was {near.candidate.key()}: {_verdict(data, near)}." if near else ""
        return "No trial met the target." + why
    missed = "; ".join(
        f"{key} (#{number}: {_confirmation_verdict(data, key, again)})"
        for key, (number, again) in sorted(data.confirmations.items(), key=lambda i: i[1][0])
    )
    return (
        f"No configuration held the target when measured again for {data.confirm_s:g} s: "
        f"{missed}. Only a configuration that met it when measured again is recommended "
        f"(more with --confirm and --confirm-steps, or on a quieter machine)."
    )


def _search_trial(data: ReportData, candidate: Candidate) -> tuple[int, Trial] | None:
    return next(((n, t) for n, t in data.trials if t.candidate == candidate), None)


def _trial_table(data: ReportData) -> Block:
    names = [d.name for d in data.space.dimensions]
    headers = ["#", *names, f"{data.unit}/s", f"{data.metric} ms", "clients", "MiB"]
    headers += ["replica-h/1M"]
    headers += ["cost/1M", "verdict"]
    best = data.best.candidate if data.best is not None else None
    confirmed_best = best is not None and best.key() in data.confirmations
    rows: list[tuple[int, tuple[str, ...]]] = []
    for number, trial in data.trials:
        star = trial.candidate == best and not confirmed_best
        rows.append((number, _row(data, number, trial, _verdict(data, trial), star)))
        confirmation = data.confirmations.get(trial.candidate.key())
        if confirmation is not None:
            again = Trial(trial.candidate, confirmation[1])
            verdict = _confirmation_verdict(data, trial.candidate.key(), confirmation[1])
            star = trial.candidate == best and confirmed_best
            rows.append((confirmation[0], _row(data, confirmation[0], again, verdict, star)))
    ordered = tuple(row for _, row in sorted(rows))
    return Block("table", headers=tuple(headers), rows=ordered)


def _row(data: ReportData, number: int, trial: Trial, verdict: str, star: bool) -> tuple[str, ...]:
    m = trial.measurement
    names = [d.name for d in data.space.dimensions]
    replica_h = cost_per_million(1.0, trial.candidate.replicas(), m.throughput)
    return (
        str(number) + (" ★" if star else ""),
        *(f"{trial.candidate.as_dict().get(n, '')}" for n in names),
        f"{m.throughput:.1f}",
        _ms(m.p99_ms),
        str(m.concurrency),
        f"{m.memory_mb:.0f}",
        "—" if replica_h is None else f"{replica_h:.3g}",
        _cost_text(data, trial),
        verdict,
    )


def _verdict(data: ReportData, trial: Trial) -> str:
    m, o = trial.measurement, data.objective
    again = data.confirmations.get(trial.candidate.key())
    if m.error is not None:
        return "failed: " + m.error.splitlines()[0]
    if not o.meets_slo(m):
        return f"misses the target even at {_lightest(m)} client(s)"
    if not o.fits_memory(m):
        return "over the memory budget"
    if again is None:
        return "feasible"
    if o.meets_slo(again[1]):
        return f"feasible, confirmed by #{again[0]}"
    return f"feasible in its trial; did not hold when measured again (#{again[0]})"


def _confirmation_verdict(data: ReportData, key: str, again: Measurement) -> str:
    """A confirmation's row: the trial it confirms and at which load it held, if any."""
    origin = next((n for n, t in data.trials if t.candidate.key() == key), None)
    confirms = f"confirms #{origin}" if origin is not None else "a confirmation"
    loads = ", ".join(str(p.concurrency) for p in again.points)
    if again.error is not None:
        return f"{confirms}: failed: {again.error.splitlines()[0]}"
    if not data.objective.meets_slo(again):
        return f"{confirms}: missed the target at {loads} client(s)"
    return f"{confirms}: held at {again.concurrency} client(s) (measured at {loads})"


def _lightest(m: Measurement) -> int:
    return min((p.concurrency for p in m.points), default=1)


def _cost_text(data: ReportData, trial: Trial) -> str:
    cost = cost_per_million(
        data.price_per_hour, trial.candidate.replicas(), trial.measurement.throughput
    )
    return "—" if cost is None else f"{cost:.4g}"


def _cost_note(data: ReportData) -> str:
    return (
        f"Cost per 1M {data.unit} = price_per_hour * replicas / 3600 / throughput * 1e6, at "
        f"{data.price_per_hour:g} per replica-hour (--price-per-hour, or the model's or "
        f"server's price_per_hour); replica-h/1M is the same at a price of 1. Throughput is the "
        f"trial's operating point: the load step with the most {data.unit}/s whose "
        f"{data.metric} met the target (a confirmation's: the load that held). — means no step "
        f"met it."
    )


def _calibration(data: ReportData) -> str:
    parts = ", ".join(f"{b}: {ms:.3g} ms" for b, ms in sorted(data.compute_ms.items()))
    kept = data.space.dimension("max_batch_size").values if _has(data, "max_batch_size") else ()
    return (
        f"The model alone, in-process, fastest of several runs per batch size: {parts}. "
        f"Batch sizes searched: {', '.join(str(v) for v in kept)}."
    )


def _has(data: ReportData, name: str) -> bool:
    return any(d.name == name for d in data.space.dimensions)


def _ms(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "—"


# --- rendering -------------------------------------------------------------------------------


def render_markdown(doc: Sequence[Block]) -> str:
    """The blocks as Markdown."""
    lines: list[str] = []
    for block in doc:
        if block.kind == "table":
            lines += ["| " + " | ".join(block.headers) + " |", "|" + "---|" * len(block.headers)]
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
        elif block.kind == "code":
            lines += ["```", block.text.rstrip("\n"), "```"]
        elif block.kind == "img":
            lines.append(f"![{block.text}]({block.text})")
        else:
            lines.append({"h1": "# ", "h2": "## ", "p": ""}[block.kind] + block.text)
        lines.append("")
    return "\n".join(lines)


def render_html(doc: Sequence[Block], title: str) -> str:
    """The blocks as a standalone HTML page."""
    body: list[str] = []
    for block in doc:
        if block.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif block.kind == "code":
            body.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
        elif block.kind == "img":
            src = html.escape(block.text)
            body.append(f'<img src="{src}" alt="{src}">')
        else:
            body.append(f"<{block.kind}>{_inline_code(block.text)}</{block.kind}>")
    return _PAGE.format(title=html.escape(title), body="\n".join(body))


def _inline_code(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


_PAGE: Final = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 70em; margin: 2em auto; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }}
pre {{ background: #f4f4f4; padding: 0.5em; }}
img {{ max-width: 100%; }}
</style></head>
<body>
{body}
</body></html>
"""


def write_report(folder: Path, data: ReportData) -> list[Path]:
    """Write the summaries and the snippet into ``folder``; returns the paths written."""
    doc = blocks(data)
    written = [folder / SUMMARY_MD, folder / SUMMARY_HTML, folder / SNIPPET]
    written[0].write_text(render_markdown(doc))
    written[1].write_text(render_html(doc, f"inferd tune: {data.model_name}"))
    written[2].write_text(snippet(data))
    if data.best_config is not None:
        written.append(folder / FULL_CONFIG)
        written[3].write_text(data.best_config)
    return written
