"""Performance verdicts as Allure 3 quality gates.

Allure 3 reads metric samples from ``*-perf.json`` files in the results directory and judges
them with ``metricMin`` / ``metricMax`` quality-gate rules. A verdict passes only when its whole
95% interval lies on the passing side of the threshold, so each threshold becomes a gate on the
interval's end nearest to it:

- ``>= X`` (``ttft_reduction``, ``capacity_gain`` ...): ``metricMin`` of the interval's low end;
- ``<= X`` (``control_gain``): ``metricMax`` of the interval's high end;
- ``within ±X`` (``tpot_change``): both, one gate per end.

A failed and an INCONCLUSIVE verdict therefore both fail their gate, as they fail their test.
An end without a bound (an open interval) has no value: Allure reports the gate's metric as
missing and fails it. Each sample carries the rule it is judged by (``gate``), from which
``scripts/allure-render.mjs`` builds the report's quality-gate configuration.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_mooncake.results.schema import Op, Verdict

PERF_FILE = "mooncake-perf.json"


def _bound(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _sample(key: str, end: str, value: float | None, rule: str, limit: float, at_ms: float,
            statistic: str | None = None) -> dict[str, Any]:
    # Allure keeps a sample only with an id, a key, a finite value and start/stop times (epoch ms).
    # The title names the statistic judged (a stratum-weighted median is not the pooled one).
    title = f"{key}{f' ({statistic})' if statistic else ''}, 95% CI {end}"
    return {"id": f"{key} ({end})", "key": f"{key} ({end})", "title": title, "value": value,
            "start": at_ms, "stop": at_ms, "better": "higher" if rule == "metricMin" else "lower",
            "gate": {"rule": rule, "value": limit}}


def gate_samples(name: str, verdicts: Iterable[Verdict]) -> list[dict[str, Any]]:
    """Metric samples, each with its gate, for the verdicts of one record (``name``: e.g. ``serving high_reuse``)."""
    samples = []
    at_ms = time.time() * 1000
    for verdict in verdicts:
        key, limit, stat = f"{name} {verdict.metric}", verdict.rule.value, verdict.judged_statistic
        low, high = _bound(verdict.ci_low), _bound(verdict.ci_high)
        if verdict.rule.op is Op.AT_LEAST:
            samples.append(_sample(key, "low end", low, "metricMin", limit, at_ms, stat))
        elif verdict.rule.op is Op.AT_MOST:
            samples.append(_sample(key, "high end", high, "metricMax", limit, at_ms, stat))
        elif verdict.rule.op is Op.WITHIN:
            samples += [_sample(key, "low end", low, "metricMin", -limit, at_ms, stat),
                        _sample(key, "high end", high, "metricMax", limit, at_ms, stat)]
        # Op.ABOVE (Mooncake served the hits) has no Allure rule: metricMin would pass a count of 0.
    return samples


def write_perf_file(alluredir: Path, samples: Sequence[Mapping[str, Any]]) -> Path | None:
    """``<alluredir>/mooncake-perf.json``, when there is anything to gate."""
    if not samples:
        return None
    path = Path(alluredir, PERF_FILE)
    path.write_text(json.dumps(list(samples), indent=2), "utf-8")
    return path
