"""Assemble the evaluation report (seed 000's sections) from runs, then write it."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_mooncake.config.markers import SCENARIOS
from pytest_mooncake.qualify.breakdown import HEADING, describe
from pytest_mooncake.qualify.tiers import TIERS_HEADING, describe_tiers
from pytest_mooncake.report import charts
from pytest_mooncake.report.document import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Paragraph,
    Rule,
    Table,
    mark,
    to_html,
    to_markdown,
)
from pytest_mooncake.report.labels import TEXT
from pytest_mooncake.report.model import (
    Capacity,
    CostModel,
    Judged,
    Pair,
    Recommendation,
    Run,
    capacities_of,
    cost_models,
    headline,
    latency_speedup,
    measured_path,
    read,
    recommend,
    setup_scope,
    unpassed_tests,
)
from pytest_mooncake.report.rows import (
    ROWS,
    change,
    interval,
    judged_change,
    own_row_verdicts,
    row_verdicts,
    status,
    target,
)
from pytest_mooncake.results.schema import Outcome

_BAR_WIDTH = 60


@dataclass(frozen=True)
class ReportOptions:
    out: Path
    formats: tuple[str, ...] = ("md", "html")
    server_cost: float | None = None
    servers: float = 10.0
    offered_load: float | None = None
    store_servers: float | None = None
    store_server_cost: float | None = None
    lang: str = "en"
    charts: bool = True
    headline: str | None = None


@dataclass(frozen=True)
class Built:
    files: tuple[Path, ...]
    recommendation: Recommendation


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _rate(value: float | None) -> str:
    return "∞" if value is None else f"{value:.3g}"


def _text_bars(rows: Sequence[tuple[str, float, str]], note: str) -> Code:
    """The seed's ASCII bars: the longest bar is the largest value."""
    top = max((value for _, value, _ in rows), default=0.0) or 1.0
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{name:<{width}}  {'█' * max(1, round(_BAR_WIDTH * value / top))}  {shown}" for name, value, shown in rows]
    return Code("\n".join(lines) + f"\n\n{' ' * width}  {note}")


class _Builder:
    def __init__(self, runs: Sequence[Run], pairs: Sequence[Pair], options: ReportOptions) -> None:
        self.runs, self.pairs, self.options = runs, pairs, options
        self.capacities: list[Capacity] = [c for run in runs for c in capacities_of(run)]
        self.t = TEXT[options.lang]
        self.charts_dir = options.out / "charts"
        self.blocks: list[Block] = []
        self.verdicts = ([Judged(pair.name, v) for pair in pairs for v in pair.verdicts]
                         + [Judged(f"capacity {c.topology}", v) for c in self.capacities for v in c.verdicts])
        self.recommendation = recommend(self.verdicts)
        self.path = measured_path(pairs)
        # Scenarios that reuse nothing by design are no finding, no improvement and no headline.
        self.reusing = [p for p in pairs if p.measures_reuse]
        self.lead = headline(pairs if options.headline else self.reusing, options.headline)
        self.failed_tests = unpassed_tests(runs)
        if self.failed_tests and self.recommendation.outcome in (Outcome.PASSED, "none"):
            # Tests that failed or errored leave the run unqualified, however its verdicts read.
            self.recommendation = replace(self.recommendation, outcome=Outcome.FAILED)
        self.setup = setup_scope(pairs, runs, self.t)

    def build(self) -> list[Block]:
        t = self.t
        self.blocks += [Heading(1, t["title"]),
                        Paragraph(f"**{t['date']}**: {time.strftime('%Y-%m-%d')}  \n"
                                  f"**{t['runs']}**: {', '.join(f'{r.path.name} ({r.run_id})' for r in self.runs)}"),
                        Rule()]
        self._summary()
        self._value()
        self._comparison()
        self._details()
        self._others()
        self._decision()
        self._appendix()
        return self.blocks

    def _headline(self) -> str:
        """The recommendation's words: deploying Mooncake is recommended only where Mooncake served the hits."""
        outcome = self.recommendation.outcome
        if self.failed_tests and not (self.recommendation.failed or self.recommendation.inconclusive):
            return "rec_tests_failed"
        if outcome is Outcome.PASSED and self.path.kind != "mooncake":
            return f"rec_passed_{self.path.kind}"
        if outcome is Outcome.PASSED and self.setup:
            # A dummy model on a CPU says the cache works, not how production will fare.
            return "rec_passed_setup"
        return f"rec_{outcome}"

    def _headline_text(self) -> str:
        return self.t[self._headline()].format(setup=self.setup, n=len(self.failed_tests))

    def _path(self) -> Paragraph:
        path, t = self.path, self.t
        text = t[f"path_{path.kind}"].format(tokens=path.external_hit_tokens, keys=path.stored_keys,
                                            topologies=", ".join(path.topologies))
        return Paragraph(text + (t["path_polluted"].format(n=path.polluted) if path.polluted else ""))

    def _summary(self) -> None:
        t, rec = self.t, self.recommendation
        self.blocks.append(Heading(2, t["summary"]))
        self.blocks.append(Paragraph(f"**{self._headline_text()}**"))
        if self.pairs:
            self.blocks.append(self._path())
        if rec.outcome is Outcome.PASSED:
            self.blocks.append(Paragraph(t["rec_passed_why"].format(total=rec.total)))
        elif rec.outcome is Outcome.FAILED and rec.failed:
            self.blocks.append(Paragraph(t["rec_failed_why"].format(failed=len(rec.failed), total=rec.total)))
        elif rec.outcome is Outcome.INCONCLUSIVE:
            self.blocks.append(Paragraph(t["rec_inconclusive_why"].format(unsure=len(rec.inconclusive), total=rec.total)))
        # Every verdict not met, the inconclusive ones beside the failed: neither is a pass.
        if rec.failed or rec.inconclusive:
            self.blocks.append(Paragraph(f"**{t['not_met'].format(n=len(rec.failed) + len(rec.inconclusive), total=rec.total)}**"))
            self.blocks.append(Bullets(tuple(f"{status(j.verdict)} {j.scenario}: {j.verdict.message}"
                                             for j in (*rec.failed, *rec.inconclusive))))
        if self.failed_tests:
            total = sum(len(run.tests) for run in self.runs)
            self.blocks.append(Paragraph(f"**{t['not_passed'].format(n=len(self.failed_tests), total=total)}**"))
            self.blocks.append(Bullets(tuple(self._test_line(test) for test in self.failed_tests)))
        if self.pairs:
            models = ", ".join(dict.fromkeys(p.model for p in self.pairs))
            machines = "; ".join(dict.fromkeys(_machine(run.document.get("machine", {})) for run in self.runs))
            self.blocks.append(Paragraph(t["scope"].format(models=models, machines=machines)))
        for control in (j for j in self.verdicts if j.verdict.metric == "control_gain" and j.verdict.outcome is not Outcome.PASSED):
            word = "CONTAMINATED" if control.verdict.outcome is Outcome.FAILED else "INCONCLUSIVE"
            self.blocks.append(Paragraph(t["not_vouched"].format(scenario=control.scenario, word=word,
                                                                 message=control.verdict.message)))
        errors = sum(int(read(s, ("errors",)) or 0) for p in self.pairs for _, s in p.rounds)
        if errors:
            self.blocks.append(Paragraph(t["errors"].format(errors=errors)))
        if not self.pairs and not self.capacities:
            return
        self.blocks.append(Heading(3, t["findings"]))
        findings = [t["finding_capacity"].format(topology=c.topology, summary=c.summary) for c in self.capacities]
        for pair in self.reusing:
            # A judged effect is told as judged: its statistic, its interval, its outcome.
            findings += [t["finding_verdict"].format(scenario=pair.name, mark=status(v), message=v.message) for v in pair.verdicts]
            ttft = ROWS[0]
            before, after, moved = ttft.value(pair.baseline), ttft.value(pair.hit), change(ttft, pair)
            if moved is not None and not any(v.metric.startswith("ttft_reduction") for v in pair.verdicts):
                findings.append(t["finding_ttft"].format(change=_pct(moved), scenario=pair.name, base=pair.baseline_label,
                                                         hit=pair.hit_label, before=ttft.format(before), after=ttft.format(after)))
            rps = next(r for r in ROWS if r.key == "requests_per_s")
            moved = change(rps, pair)
            if moved is not None:
                findings.append(t["finding_tput"].format(change=_pct(moved), scenario=pair.name,
                                                         before=rps.format(rps.value(pair.baseline)),
                                                         after=rps.format(rps.value(pair.hit))))
            rate = read(pair.hit, ("hit_rate",))
            if rate is not None:
                findings.append(t["finding_hit"].format(scenario=pair.name, rate=f"{rate:.1%}"))
            if pair.prediction:
                findings.append(t["finding_prediction"].format(scenario=pair.name, **pair.prediction))
            elif pair.no_prediction:
                findings.append(t["finding_no_prediction"].format(scenario=pair.name, reason=pair.no_prediction))
        self.blocks.append(Bullets(tuple(findings)))
        unreused = [p.name for p in self.pairs if not p.measures_reuse]
        if unreused:
            self.blocks.append(Paragraph(t["no_reuse"].format(scenarios=", ".join(unreused))))

    def _test_line(self, test: Mapping[str, Any]) -> str:
        """A test that did not pass, with what it said and the records it left."""
        nodeid = str(test.get("test"))
        records = [f"{r.get('kind')} {r.get('name')}" for run in self.runs for r in run.document.get("records", [])
                   if r.get("test") == nodeid]
        written = f" ({self.t['records_of'].format(names=', '.join(records))})" if records else ""
        return f"{mark(str(test.get('outcome')))} {nodeid}: {test.get('message') or '-'}{written}"

    def _value(self) -> None:
        if self.lead is None and not self.capacities:
            return
        t, o = self.t, self.options
        self.blocks += [Rule(), Heading(2, t["value"]), Heading(3, t["cost"])]
        models = cost_models(self.capacities, servers=o.servers, load=o.offered_load, server_cost=o.server_cost,
                             store_servers=o.store_servers, store_server_cost=o.store_server_cost)
        gains = [m for m in models if m.topology not in self._references]
        if not gains:
            self.blocks.append(Paragraph(t["cost_no_capacity"]))
        for model in gains:
            self._capacity_lines(model)
        if models:
            self.blocks += [Heading(3, t["cost_table"]), self._capacity_table(models), Paragraph(t["cost_caveat"])]
        for capacity in (c for c in self.capacities if c.max_rate is None):
            self.blocks.append(Paragraph(t["capacity_below"].format(summary=capacity.summary)))
        self.blocks.append(Heading(3, t["roi"]))
        stored = [m for m in gains if m.store_servers]
        if not stored or o.server_cost is None:
            self.blocks.append(Paragraph(t["roi_none"]))
        else:
            self.blocks.append(Table((t["topology"], t["roi_invest"], t["roi_cost"], t["monthly"], t["roi_net"]), tuple(
                (m.topology, t["roi_servers"].format(n=m.store_servers), _money(m.store_cost), _money(m.monthly_savings),
                 _money(m.net)) for m in stored)))
        speedups = [(pair, latency_speedup(pair)) for pair in self.reusing]
        if speedups:
            rows = tuple((pair.name, "-" if gain is None else _pct(gain),
                          " ".join(f"{status(v)} {v.metric}" for v in pair.verdicts) or "-") for pair, gain in speedups)
            self.blocks += [Heading(3, t["speedup_table"]), Paragraph(t["speedup_note"]),
                            Table((t["scenario"], t["gain"], t["verdicts"]), rows)]

    @property
    def _references(self) -> set[str]:
        return {c.reference for c in self.capacities}

    def _capacity_lines(self, model: CostModel) -> None:
        t, o = self.t, self.options
        capacity = next(c for c in self.capacities if c.topology == model.topology)
        fewest, most = model.servers_range
        lines = [
            t["cost_capacity"].format(topology=model.topology, slo=capacity.slo, rate=f"{model.capacity:.3g}",
                                      low=f"{model.ci_low:.3g}", high=_rate(model.ci_high),
                                      base=f"{model.baseline_capacity:.3g}", ratio=f"{model.ratio:.2f}"),
            t["cost_servers"].format(load=f"{model.load:.3g}", base=model.baseline_servers, needed=model.servers_needed,
                                     fewest="-" if fewest is None else fewest, most="∞" if most is None else most,
                                     saved=model.servers_saved, topology=model.topology),
        ]
        if model.monthly_savings is None:
            lines.append(t["cost_no_price"])
        else:
            lines.append(t["cost_money"].format(price=o.server_cost, saved=model.servers_saved, money=model.monthly_savings))
        self.blocks.append(Bullets(tuple(lines)))

    def _capacity_table(self, models: Sequence[CostModel]) -> Table:
        t = self.t
        rows = []
        for model in models:
            capacity = next(c for c in self.capacities if c.topology == model.topology)
            fewest, most = model.servers_range
            judged = " ".join(f"{status(v)} {v.metric}" for v in capacity.verdicts) or "-"
            rows.append((model.topology, f"{model.capacity:.3g}", f"{model.ci_low:.3g} .. {_rate(model.ci_high)}",
                         f"{model.servers_needed}", f"{'-' if fewest is None else fewest} .. {'∞' if most is None else most}",
                         f"{model.servers_saved}", _money(model.monthly_savings), judged))
        return Table((t["topology"], t["capacity"], t["ci"], t["needed"] + f" ({models[0].load:.3g} req/s)",
                      t["needed_range"], t["saved"], t["monthly"], t["verdicts"]), tuple(rows))

    def _comparison(self) -> None:
        if self.lead is None and not self.capacities:
            return
        t, pair = self.t, self.lead
        self.blocks += [Rule(), Heading(2, t["comparison"])]
        for title, row_key in ((t["ttft_bars"], "ttft_mean"), (t["tput_bars"], "requests_per_s")):
            if pair is None:
                break
            row = next(r for r in ROWS if r.key == row_key)
            before, after, moved = row.value(pair.baseline), row.value(pair.hit), change(row, pair)
            if before is None or after is None or moved is None:
                continue
            self.blocks += [Heading(3, f"{title} — {pair.name}"),
                            _text_bars([(pair.baseline_label, before, row.format(before)),
                                        (pair.hit_label, after, row.format(after))], f"{_pct(moved)}")]
        if self.options.charts:
            self.blocks.append(Heading(3, t["charts"]))
            self.blocks += [Image(path.relative_to(self.options.out), path.stem) for path in self._charts()]

    def _charts(self) -> list[Path]:
        self.charts_dir.mkdir(parents=True, exist_ok=True)
        made = charts.capacity_curves(self.capacities, self.charts_dir) if self.capacities else []
        if not self.pairs:
            return made
        made += [
            charts.comparison(self.pairs, self.charts_dir / "ttft_comparison.png", ("ttft_ms", "mean"), "TTFT mean (ms)",
                              "Time to first token"),
            charts.comparison(self.pairs, self.charts_dir / "throughput_comparison.png", ("requests_per_s",), "requests/s",
                              "Requests/s one at a time (a latency speed-up, not a capacity)"),
        ]
        if self.reusing:
            made.append(charts.improvement(self.reusing, self.charts_dir / "overall_improvement.png"))
        if any(pair.measured_breakdowns for pair in self.pairs):
            made.append(charts.breakdown(self.pairs, self.charts_dir / "ttft_breakdown.png"))
        if any(pair.measured_tiers for pair in self.pairs):
            made.append(charts.tiers(self.pairs, self.charts_dir / "cache_tiers.png"))
        for pair in self.pairs:
            made.append(charts.latency(pair, self.charts_dir / f"{pair.name}_latency.png"))
            made.append(charts.throughput(pair, self.charts_dir / f"{pair.name}_throughput.png"))
        transfers = [r.get("data", {}) for run in self.runs for r in run.records("transfer")]
        if transfers:
            made.append(charts.bandwidth(transfers, self.charts_dir / "bandwidth.png"))
        return made

    def _details(self) -> None:
        t = self.t
        self.blocks += [Rule(), Heading(2, t["details"])]
        for pair in self.pairs:
            judged = row_verdicts(pair)
            rows = []
            for row in ROWS:
                verdict = judged.get(row.key)
                moved = change(row, pair)
                rows.append((t["row." + row.key], row.format(row.value(pair.baseline)), row.format(row.value(pair.hit)),
                             "-" if moved is None else _pct(moved),
                             interval(verdict) if verdict else "-", target(verdict) if verdict else "-", status(verdict)))
            # A statistic no row holds (a stratum-weighted median, a latency speed-up) is shown on a row of
            # its own, its point estimate beside its own interval, never beside another statistic's.
            for verdict in own_row_verdicts(pair):
                moved = judged_change(verdict)
                rows.append((t["row.judged"].format(metric=verdict.metric, statistic=verdict.judged_statistic), "-", "-",
                             _pct(moved) if math.isfinite(moved) else "-", interval(verdict), target(verdict), status(verdict)))
            self.blocks += [Heading(3, f"{pair.name} ({pair.baseline_label} → {pair.hit_label}, {pair.model})"),
                            Table((t["metric"], f"{t['baseline']}: {pair.baseline_label}", f"{t['hit']}: {pair.hit_label}",
                                   t["change"], t["ci"], t["target"], t["status"]), tuple(rows))]
            if pair.measured_breakdowns:  # told as the terminal tells it
                self.blocks.append(Paragraph(HEADING + "; ".join(describe(name, b) for name, b in pair.breakdowns)))
            if pair.tiers:
                self.blocks.append(Paragraph(TIERS_HEADING + "; ".join(describe_tiers(name, s) for name, s in pair.tiers)))
        for capacity in self.capacities:
            rows = tuple((f"{read(step, ('rate',)) or 0:.3g}", str(step.get("counted", "?")), str(step.get("errors", "?")),
                          _p90_cell(step.get("ttft_p90")), _p90_cell(step.get("tpot_p90")),
                          f"{read(step, ('goodput',)) or 0:.3g}", _step_mark(step.get("outcome")))
                         for step in sorted(capacity.steps, key=lambda s: read(s, ("rate",)) or 0.0))
            self.blocks += [Heading(3, f"{capacity.topology} ({t['capacity']}: {capacity.slo})"), Paragraph(capacity.summary),
                            Table((t["offered"], "n", t["failed"], "TTFT p90 (95% CI)", "TPOT p90 (95% CI)", t["goodput"],
                                   t["outcome"]), rows)]
        if self.verdicts:
            self.blocks += [Heading(3, t["verdicts"]),
                            Table((t["scenario"], t["metric"], t["threshold"], t["effect"], t["ci"], "n", t["outcome"], t["message"]),
                                  tuple(_verdict_cells(j) for j in self.verdicts))]

    def _others(self) -> None:
        kinds: dict[str, list[Mapping[str, Any]]] = {}
        failed = {str(test.get("test")) for test in self.failed_tests}  # the summary lists their records
        for run in self.runs:
            for record in run.document.get("records", []):
                if record.get("kind") not in ("serving", "capacity") and record.get("test") not in failed:
                    kinds.setdefault(str(record.get("kind")), []).append(record)
        if not kinds:
            return
        self.blocks += [Rule(), Heading(2, self.t["other"])]
        for kind, records in kinds.items():
            columns = list(dict.fromkeys(key for r in records for key, value in r.get("data", {}).items()
                                         if value is not None and _scalar(value) is not None and key != "summary"))
            title = self.t["transfer"] if kind == "transfer" else kind
            self.blocks += [Heading(3, title),
                            Table(("name", *columns), tuple((str(r.get("name")), *(_scalar(r.get("data", {}).get(c)) or "-" for c in columns))
                                                            for r in records))]
            self.blocks += [Paragraph(str(r["data"]["summary"])) for r in records if r.get("data", {}).get("summary")]
            # A replay's cache tiers beside the simulator's prediction, told as the terminal told them.
            self.blocks += [Bullets(tuple(r["data"]["tiers"]["lines"])) for r in records
                            if (r.get("data", {}).get("tiers") or {}).get("lines")]

    def _decision(self) -> None:
        t, rec = self.t, self.recommendation
        said = self._headline()
        decide = {"rec_passed": "decide_passed", "rec_tests_failed": "decide_failed", "rec_passed_setup": "decide_passed_setup"}.get(
            said, "decide_passed_local" if rec.outcome is Outcome.PASSED else f"decide_{rec.outcome}")
        self.blocks += [Rule(), Heading(2, t["decision"]), Paragraph(f"**{self._headline_text()}**"),
                        Paragraph(t[decide].format(setup=self.setup)),
                        *([Paragraph(t["scope_setup"].format(setup=self.setup))]
                          if self.setup and decide != "decide_passed_setup" else []),
                        Paragraph(f"**{t['met']}**: {rec.passed}/{rec.total}")]

    def _appendix(self) -> None:
        t = self.t
        self.blocks += [Rule(), Heading(2, t["appendix"]), Heading(3, t["environment"])]
        for run in self.runs:
            doc = run.document
            machine = doc.get("machine", {})
            gpus = [f"{count} × {name}" for name, count in Counter(machine.get("gpus") or []).items()]
            self.blocks.append(Bullets((
                f"run: {run.run_id} ({run.path.name}), started {doc.get('started', '?')}, git {doc.get('git_commit') or '?'}",
                f"machine: {machine.get('hostname', '?')}, {machine.get('platform', '?')}, {machine.get('cpus', '?')} CPUs, "
                f"GPUs: {'; '.join(gpus) if gpus else 'none'}",
                "versions: " + ", ".join(f"{k} {v}" for k, v in doc.get("versions", {}).items()),
                "topology: " + json.dumps(doc.get("topology", {}), sort_keys=True),
            )))
        self.blocks.append(Heading(3, t["scenarios"]))
        items = []
        for pair in self.pairs:
            described = SCENARIOS.get(pair.scenario, "")
            definition = ", ".join(f"{k}={v}" for k, v in pair.definition.items() if k != "name")
            sizes = ", ".join(f"{name}: n={int(read(s, ('n',)) or 0)}" for name, s in pair.rounds)
            items.append(" — ".join(filter(None, (f"**{pair.name}** ({pair.scenario}, {pair.endpoint}, {pair.model})",
                                                   described, definition, sizes))))
        if items:
            self.blocks.append(Bullets(tuple(items)))
        self.blocks.append(Heading(3, t["config"]))
        for run in self.runs:
            config = {k: v for k, v in run.document.get("config", {}).items() if v not in (None, "", [], {})}
            self.blocks.append(Code(f"# {run.run_id}\n" + json.dumps(config, indent=2, sort_keys=True, default=str), "json"))


def _p90_cell(estimate: object) -> str:
    if not isinstance(estimate, Mapping):
        return "-"
    value, low, high = (read(estimate, (key,)) for key in ("value", "ci_low", "ci_high"))
    shown = [("inf" if v is None else f"{v:.0f}") for v in (value, low, high)]
    return f"{shown[0]} ms ({shown[1]} .. {shown[2]})"


def _step_mark(outcome: object) -> str:
    known = {o.value for o in Outcome}
    return mark(str(outcome)) if outcome in known else mark("none")


def _verdict_cells(judged: Judged) -> tuple[str, ...]:
    v = judged.verdict
    return (judged.scenario, v.metric, str(v.rule), _share(v.effect), f"{_share(v.ci_low)} .. {_share(v.ci_high)}",
            f"{v.n_before} vs {v.n_after}", status(v), v.message)


def _share(value: float) -> str:
    # An open interval end (or an undefined effect) has no figure.
    return f"{value:.1%}" if math.isfinite(value) else "-"


def _machine(machine: Mapping[str, Any]) -> str:
    gpus = [f"{count} × {name.split(',')[0]}" for name, count in Counter(machine.get("gpus") or []).items()]
    hardware = " + ".join(gpus) if gpus else f"CPU only, {machine.get('cpus', '?')} cores"
    return f"{machine.get('hostname', '?')} ({hardware})"


def _scalar(value: object) -> str | None:
    """A cell for a record's value; None for what a cell cannot hold. Counts nested in a mapping, or
    in a list of mappings (a concurrency test's writers and readers), are shown as their totals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, str, bool)):
        return str(value)
    items = [value] if isinstance(value, Mapping) else value if isinstance(value, list) else []
    if not items or not all(isinstance(i, Mapping) and all(_count(v) for v in i.values()) for i in items):
        return None
    totals: dict[str, float] = {}
    for item in items:
        for key, count in item.items():
            totals[key] = totals.get(key, 0) + count
    shown = ", ".join(f"{key} {count:g}" for key, count in totals.items())
    return shown if isinstance(value, Mapping) else f"{shown} ({len(items)} in all)"


def _count(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def build(runs: Sequence[Run], pairs: Sequence[Pair], options: ReportOptions) -> Built:
    options.out.mkdir(parents=True, exist_ok=True)
    builder = _Builder(runs, pairs, options)
    blocks = builder.build()
    written = []
    if "md" in options.formats:
        path = options.out / "report.md"
        path.write_text(to_markdown(blocks), "utf-8")
        written.append(path)
    if "html" in options.formats:
        path = options.out / "report.html"
        path.write_text(to_html(blocks, TEXT[options.lang]["title"], options.out), "utf-8")
        written.append(path)
    return Built(tuple(written), builder.recommendation)
