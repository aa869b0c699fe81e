"""A misconfigured deployment gets one message naming the causes of its own topology.

Field cases (issue 19): a vLLM started without its connector beside an attached master was
refused with three copies of a message whose causes were LMCache's, and nothing said that no
results were written; a vLLM that died of a wrong master port in its Mooncake config got
"Connection refused — fix: check the URL"; the doctor passed such a vLLM.
"""

from __future__ import annotations

import pytest

from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.connectors import not_wired_causes
from pytest_mooncake.endpoints.server import attach_endpoint
from pytest_mooncake.errors import EndpointUnreachable

from .fakes.fake_master import FakeMaster
from .serving.fake_openai_server import FakeOpenAIServer
from .test_tokens import write_tokenizer

STORE_CAUSES = "Likely causes for MooncakeStoreConnector: (1) the instance was started without --kv-transfer-config"


def _project(pytester: pytest.Pytester) -> list[str]:
    """Three tests on the serving endpoint, and the options every run here shares."""
    # The wiring check waits this long for keys that never come (30 s by default).
    pytester.makeconftest("import pytest_mooncake.endpoints.preflight as preflight\npreflight.SETTLE_TIMEOUT_S = 2.0\n")
    pytester.makepyfile(test_serving="""
        def test_one(openai_endpoint): pass
        def test_two(openai_endpoint): pass
        def test_three(openai_endpoint): pass
    """)
    return ["-p", "no:cacheprovider", f"--mooncake-tokenizer={write_tokenizer(pytester.path)}",
            f"--mooncake-results-dir={pytester.path / 'results'}"]


def test_causes_are_the_connectors_own() -> None:
    store = not_wired_causes("MooncakeStoreConnector", "10.0.0.5:50051")
    assert store.startswith(STORE_CAUSES) and "LMCache" not in store
    assert "MOONCAKE_CONFIG_PATH" in store and "master_server_address in that config is not 10.0.0.5:50051" in store
    lmcache = not_wired_causes("LMCacheConnectorV1")
    assert "mooncake_master_server_addr" in lmcache and "MOONCAKE_CONFIG_PATH" not in lmcache
    assert "bootstrap port" in not_wired_causes("MooncakeConnector")
    with pytest.raises(ValueError, match="unknown connector 'NixlConnector'; known: MooncakeStoreConnector"):
        not_wired_causes("NixlConnector")


def test_a_vllm_without_the_connector_is_refused_once_with_the_store_connectors_causes(pytester: pytest.Pytester) -> None:
    options = _project(pytester)
    with FakeMaster() as master, FakeOpenAIServer(tokens=2) as server:  # answers, stores nothing
        result = pytester.runpytest_subprocess(*options, *master.options, f"--mooncake-openai-base-url={server.base_url}",
                                               "--mooncake-topology=mooncake-store", timeout=120)
        causes = not_wired_causes("MooncakeStoreConnector", f"127.0.0.1:{master.port}")
    result.assert_outcomes(errors=3)
    # Told once in the run's own output; pytest's short summary (untruncated under CI) repeats its first line.
    out = result.stdout.str().split("short test summary info")[0]
    assert out.count(causes) == 1, out
    assert "LMCache" not in out and "During handling" not in out
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_one*",
        "topology mooncake-store: the KV cache is not wired to Mooncake, nothing was measured.",
        "after a 519-token cold request the Mooncake master's master_key_count stayed at 100 for 2 s*",
        "*ERROR at setup of test_two*",
        "topology mooncake-store: the KV cache is not wired to Mooncake, nothing was measured. "
        "(told in full at the set-up of test_serving.py::test_one)",
        "*mooncake results: none written*",
        "no results file or report was written: no test recorded a measurement; the deployment refused to set up: "
        "topology mooncake-store: the KV cache is not wired to Mooncake, nothing was measured.",
    ])
    assert not (pytester.path / "results").exists()


def test_a_run_that_never_used_mooncake_says_nothing_about_results(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain(): pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "mooncake results" not in result.stdout.str()


def test_a_refusing_endpoint_on_a_store_topology_points_at_its_mooncake_config(pytester: pytest.Pytester) -> None:
    """The field: a vLLM whose Mooncake config named a wrong master port exited after ~115 s of retries."""
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest_subprocess("--mooncake-openai-base-url=http://127.0.0.1:1/v1",
                                           "--mooncake-topology=mooncake-store", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert err.count("Connection refused") == 1, err
    result.stderr.fnmatch_lines([
        "*?FAIL? OpenAI endpoint http://127.0.0.1:1/v1: GET /models: *refused*",
        "*fix: check the URL (it ends in /v1), --mooncake-api-key and that the server is up. A vLLM with "
        "MooncakeStoreConnector exits about two minutes after start-up when the master in its Mooncake config does not "
        "answer: compare master_server_address and metadata_server in the file its MOONCAKE_CONFIG_PATH names with "
        "--mooncake-master / --mooncake-metadata-url, and look for 'Client not available' in the instance's log",
    ])


def test_without_a_mooncake_topology_a_refusing_endpoint_gets_the_plain_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest_subprocess("--mooncake-openai-base-url=http://127.0.0.1:1/v1", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "refused" in result.stderr.str() and "MOONCAKE_CONFIG_PATH" not in result.stderr.str()


def test_attaching_a_refusing_endpoint_names_the_mooncake_config() -> None:
    with pytest.raises(EndpointUnreachable, match=r"(?s)refused.*Fix: check the URL.*MOONCAKE_CONFIG_PATH.*Client not available"):
        attach_endpoint("http://127.0.0.1:1/v1", MooncakeConfig.from_defaults(), "endpoint", connector="MooncakeStoreConnector")
    with pytest.raises(EndpointUnreachable) as plain:
        attach_endpoint("http://127.0.0.1:1/v1", MooncakeConfig.from_defaults(), "endpoint")
    assert "MOONCAKE_CONFIG_PATH" not in str(plain.value)


def _doctor(pytester: pytest.Pytester, *options: str) -> pytest.RunResult:
    pytester.makeconftest("import pytest_mooncake.endpoints.preflight as preflight\npreflight.SETTLE_TIMEOUT_S = 2.0\n")
    tokenizer = write_tokenizer(pytester.path)
    return pytester.runpytest_subprocess("--mooncake-doctor", f"--mooncake-tokenizer={tokenizer}", *options, timeout=120)


def test_the_doctor_fails_a_store_topology_whose_master_gets_no_keys(pytester: pytest.Pytester) -> None:
    with FakeMaster() as master, FakeOpenAIServer(tokens=2) as server:
        result = _doctor(pytester, *master.options, f"--mooncake-openai-base-url={server.base_url}",
                         "--mooncake-topology=mooncake-store")
        causes = not_wired_causes("MooncakeStoreConnector", f"127.0.0.1:{master.port}")
    assert result.ret == 1, result.stdout.str()
    # Told once in the run's own output; pytest's short summary (untruncated under CI) repeats its first line.
    out = result.stdout.str().split("short test summary info")[0]
    assert out.count(causes) == 1 and "LMCache" not in out
    result.stdout.fnmatch_lines([
        "[[]FAIL[]] KV wiring of mooncake-store (MooncakeStoreConnector): after a 519-token cold request "
        "master_key_count stayed at 100 for 2 s: the connector stores nothing in Mooncake. Likely causes for "
        "MooncakeStoreConnector: *",
        "*fix: fix the instance behind --mooncake-openai-base-url*",
        "mooncake doctor: 1 of * checks failed",
    ])


def test_the_doctor_passes_a_store_topology_whose_master_gets_keys(pytester: pytest.Pytester) -> None:
    with FakeMaster(grow=3) as master, FakeOpenAIServer(tokens=2) as server:
        result = _doctor(pytester, *master.options, f"--mooncake-openai-base-url={server.base_url}",
                         "--mooncake-topology=mooncake-store")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "[[]ok  []] KV wiring of mooncake-store (MooncakeStoreConnector): a 519-token cold request was answered and "
        "master_key_count grew by *",
        "mooncake doctor: all * checks passed",
    ])


@pytest.mark.parametrize(("save_s", "ok"), [(0.5, True), (0.0, False)])
def test_the_doctor_reads_the_lmcache_counters_for_lmcache(pytester: pytest.Pytester, save_s: float, ok: bool) -> None:
    with FakeOpenAIServer(tokens=2, save_s=save_s) as server:
        result = _doctor(pytester, "--mooncake-netns=off", f"--mooncake-openai-base-url={server.base_url}",
                         "--mooncake-topology=lmcache")
    assert result.ret == (0 if ok else 1), result.stdout.str()
    if ok:
        result.stdout.fnmatch_lines(["[[]ok  []] KV wiring of lmcache (LMCacheConnectorV1): a 519-token cold request "
                                     "was answered and the endpoint's lmcache:num_stored_tokens grew by *"])
    else:
        result.stdout.fnmatch_lines(["[[]FAIL[]] KV wiring of lmcache (LMCacheConnectorV1): *the endpoint's "
                                     "lmcache:num_stored_tokens stayed at 0 for 2 s*" + not_wired_causes("LMCacheConnectorV1")])


def test_the_doctor_leaves_topologies_without_a_connector_alone(pytester: pytest.Pytester) -> None:
    with FakeOpenAIServer(tokens=2) as server:
        result = _doctor(pytester, "--mooncake-netns=off", f"--mooncake-openai-base-url={server.base_url}")
    assert result.ret == 0, result.stdout.str()
    assert "KV wiring" not in result.stdout.str()


def test_the_doctor_does_not_look_for_pd_keys_in_the_master(pytester: pytest.Pytester) -> None:
    """vLLM's MooncakeConnector hands KV from prefiller to decoder: the master's count proves nothing."""
    with FakeMaster() as master, FakeOpenAIServer(tokens=2) as server:
        result = _doctor(pytester, *master.options, f"--mooncake-openai-base-url={server.base_url}", "--mooncake-topology=pd")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["[[]ok  []] KV wiring of pd (MooncakeConnector): a 519-token cold request was answered "
                                 "with tokens; MooncakeConnector stores nothing in the master"])


def test_an_endpoint_that_dies_after_the_preflight_is_refused_once_with_the_mooncake_fix(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    options = _project(pytester)
    # The endpoint passes the session's preflight, then exits (as a vLLM does after its Mooncake
    # client gave up) before the deployment attaches to it.
    pytester.makeconftest("""
        import os, signal, socket, time

        def pytest_collection_finish(session):
            os.kill(int(os.environ["FAKE_SERVER_PID"]), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", int(os.environ["FAKE_SERVER_PORT"])), 0.2).close()
                except OSError:
                    return
                time.sleep(0.1)
    """)
    with FakeMaster() as master, FakeOpenAIServer(tokens=2) as server:
        assert server._process is not None
        monkeypatch.setenv("FAKE_SERVER_PID", str(server._process.pid))
        monkeypatch.setenv("FAKE_SERVER_PORT", str(server.port))
        result = pytester.runpytest_subprocess(*options, *master.options, f"--mooncake-openai-base-url={server.base_url}",
                                               "--mooncake-topology=mooncake-store", timeout=120)
    result.assert_outcomes(errors=3)
    # Told once in the run's own output; pytest's short summary (untruncated under CI) repeats its first line.
    out = result.stdout.str().split("short test summary info")[0]
    assert out.count("MOONCAKE_CONFIG_PATH") == 1 and "Traceback" not in out, out
    result.stdout.fnmatch_lines([
        f"topology mooncake-store: nothing was measured. OpenAI endpoint {server.base_url} is not reachable: *refused*",
        "Fix: check the URL*Client not available' in the instance's log",
        "*(told in full at the set-up of test_serving.py::test_one)",
    ])
