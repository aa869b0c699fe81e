"""Against a real vLLM with prefix caching OFF, no KV-reuse gain may ever be claimed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.server import Endpoint, spawned_vllm, vllm_available
from pytest_mooncake.endpoints.tokens import TokenPool, tokenizer_for
from pytest_mooncake.qualify.protocol import ReuseProtocol
from pytest_mooncake.qualify.reuse import evaluate
from pytest_mooncake.qualify.scenarios import Scenario, salt_tokens
from pytest_mooncake.results.schema import Outcome
from pytest_mooncake.runtime.janitor import Janitor
from pytest_mooncake.serving import RequestSpec, run_requests

from .conftest import REPO

pytestmark = pytest.mark.skipif(vllm_available(None) is not None, reason=str(vllm_available(None)))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    janitor = Janitor()
    try:
        with spawned_vllm(MooncakeConfig.from_defaults(), tmp_path_factory.mktemp("baseline"), janitor,
                          args=("--no-enable-prefix-caching",), label="vllm-no-prefix-cache") as endpoint:
            yield endpoint
    finally:
        janitor.close()


def test_warm_up_trap_never_becomes_a_claimed_reduction(baseline: Endpoint) -> None:
    """Runs first, on a fresh server: the naive first-vs-second comparison is what fools people."""
    pool = TokenPool.from_tokenizer(tokenizer_for(baseline, None), 40_000)
    same = RequestSpec("naive", prompt=tuple(pool.prompt(salt_tokens(pool, f"naive {time.time()}"), 3000)), max_tokens=4)
    naive = run_requests(baseline.client_config(300.0), [baseline.prepare(same, 0.0)] * 2)
    naive_gain = 1 - naive[1].ttft_s / naive[0].ttft_s  # type: ignore[operator]
    config = MooncakeConfig.from_defaults()
    scenario = Scenario("high_reuse", 6, 3000, 128, reuse=1.0)
    evaluation = evaluate(ReuseProtocol(baseline, pool, config, f"trap-{time.time()}", warm_up=False).run(scenario), {"ttft_reduction": 0.6})
    print(f"naive first-vs-second gain with caching off: {naive_gain:.0%}; protocol: {evaluation.summary()}")
    assert evaluation.run.round("hit").stats["cached_tokens"] == 0
    claimed = any(v.outcome is Outcome.PASSED for v in evaluation.verdicts) and not evaluation.problems
    assert not claimed, evaluation.summary()


def test_high_reuse_suite_fails_against_the_baseline(baseline: Endpoint, pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        str(REPO / "suites" / "serving" / "test_reuse.py"), "-m", "high_reuse", "-k", "test_high_reuse",
        f"--mooncake-openai-base-url={baseline.base_url}", "-p", "no:cacheprovider", timeout=600,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ttft_reduction = *(99% CI * .. *, 20%-trimmed geometric mean of n=8 vs n=8; 1 look, decided) misses the threshold >= 60%*"])

