"""``--model softreason-server`` against real vLLM servers on 127.0.0.1 (the tiny fp32 model):
the same texts as the offline vLLM and HF engines, answers independent of scheduling and of
the number of replicas, failover when a replica is killed, one clear error for each bad input.

Needs vLLM (its own virtualenv, see .ci/run); skipped without it. The servers start together
(a minute or two on 2 CPU cores) and serve the whole module.
"""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("vllm")

from lm_eval.api.model import CachingLM  # noqa: E402

from lm_eval_softreason.engines.base import EngineUnavailable  # noqa: E402
from lm_eval_softreason.engines.server.client import parse_base_urls  # noqa: E402
from lm_eval_softreason.engines.server.engine import ServerRequestError  # noqa: E402
from lm_eval_softreason.errors import ConfigError  # noqa: E402
from lm_eval_softreason.harness.hf_model import SoftReasonLM  # noqa: E402
from lm_eval_softreason.harness.server_model import SoftReasonServer  # noqa: E402
from lm_eval_softreason.scoring.verifiers import MODEL_VERIFIERS  # noqa: E402
from tests.helpers import FAST, ROOT, request  # noqa: E402
from lm_eval_softreason.harness.serve import LocalServer, free_port  # noqa: E402
from tests.vllm.test_engine_vllm import PROMPTS, build_vllm_tiny_model  # noqa: E402
from tests.vllm.test_model_vllm import vlm  # noqa: E402,F401  (the offline engine, a fixture)

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
CONTEXT = ["--dtype", "float32", "--max-model-len", "512", "--seed", "0", "--enforce-eager"]
MODES = {"greedy": {}, "sample": {"n_samples": 3, "temperature": 0.8},
         "fire": {"n_samples": 3}, "cot_decoding": {"top_k": 3}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_vllm_tiny_model(str(tmp_path_factory.mktemp("tiny-llama-server")))


@pytest.fixture(scope="module")
def servers(model_dir, tmp_path_factory):
    """a, b, c: our launcher's servers (c with vLLM's default --max-logprobs of 20);
    plain: vLLM's server without --enable-prompt-embeds. b and c are killed by tests."""
    logs = tmp_path_factory.mktemp("server-logs")
    started = {
        "a": LocalServer(model_dir, logs, *CONTEXT),
        "b": LocalServer(model_dir, logs, *CONTEXT),
        "c": LocalServer(model_dir, logs, *CONTEXT, "--max-logprobs", "20"),
        "plain": LocalServer(model_dir, logs, *CONTEXT, "--max-logprobs", "-1", embeds=False),
    }
    try:
        yield {name: s.wait() for name, s in started.items()}
    finally:
        for s in started.values():
            s.stop()


def server_lm(model_dir, *urls, **kw):
    args = {"base_url": "|".join(urls), "pretrained": model_dir, "dtype": "float32", **FAST,
            **kw}
    return SoftReasonServer.create_from_arg_obj(
        args, {"batch_size": 1, "max_batch_size": None, "device": "cuda"})


@pytest.fixture(scope="module")
def slm(model_dir, servers):
    lm = server_lm(model_dir, servers["a"].url)
    yield lm
    lm.engine.close()


def reqs(n: int = len(PROMPTS), max_gen_toks: int = 16):
    return [request(p, max_gen_toks=max_gen_toks, doc_id=i) for i, p in enumerate(PROMPTS[:n])]


def rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def traced(lm, path, **settings):
    """Answers and the trace's candidates of one run under ``settings``."""
    if path.exists():
        path.unlink()
    lm.configure(trace_path=str(path), **FAST, **settings)
    answers = lm.generate_until(reqs())
    lm.close_trace()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    cands = {r["question"]: [(c["text"], c["answer"], c["tokens"], c["r_verifier"],
                              rounded(c["r_coherence"]), rounded(c["confidence"]))
                             for c in r["candidates"]]
             for r in records}
    return answers, cands


def test_greedy_texts_equal_the_offline_vllm_and_hf_engines(slm, vlm, model_dir):
    slm.configure(mode="greedy", **FAST)
    vlm.configure(mode="greedy", **FAST)
    hlm = SoftReasonLM(pretrained=model_dir, device="cpu", dtype="float32", batch_size=16,
                       mode="greedy", **FAST)
    texts = slm.generate_until(reqs())
    assert texts == vlm.generate_until(reqs()) == hlm.generate_until(reqs())
    assert len(set(texts)) == len(texts)


def test_a_search_makes_the_offline_engines_candidates(slm, vlm, tmp_path):
    ours = traced(slm, tmp_path / "server.jsonl", mode="softreason", seed=3)
    offline = traced(vlm, tmp_path / "offline.jsonl", mode="softreason", seed=3)
    assert ours == offline
    per_question = FAST["n_init"] + FAST["batch"]  # the initial design and one BO round
    assert sum(len(c) for c in ours[1].values()) == len(PROMPTS) * per_question


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_gives_the_offline_engines_answers(slm, vlm, mode, tmp_path):
    settings = {"mode": mode, **MODES[mode]}
    assert traced(slm, tmp_path / "s.jsonl", **settings) == \
        traced(vlm, tmp_path / "v.jsonl", **settings)


@pytest.mark.parametrize("verifier", sorted(MODEL_VERIFIERS))
def test_every_verifier_runs_through_the_server(slm, vlm, verifier, tmp_path):
    settings = {"mode": "softreason", "verifier": verifier}
    ours = traced(slm, tmp_path / "s.jsonl", **settings)
    assert ours == traced(vlm, tmp_path / "v.jsonl", **settings)
    assert slm.get_model_info()["softreason_stats"]["verifier_tokens"] > 0


def test_answers_do_not_depend_on_scheduling_or_replicas(model_dir, servers, slm, tmp_path):
    reference = traced(slm, tmp_path / "ref.jsonl", mode="softreason")
    runs = {
        "one at a time": dict(num_concurrent=1),
        "lock-step": dict(free_running=False),
        "two replicas": dict(num_concurrent=32),
    }
    for name, kw in runs.items():
        urls = [servers["a"].url] + ([servers["b"].url] if name == "two replicas" else [])
        lm = server_lm(model_dir, *urls, **kw)
        try:
            assert traced(lm, tmp_path / f"{name}.jsonl", mode="softreason") == reference, name
            by_replica = lm.get_model_info()["softreason_engine"]["by_replica"]
        finally:
            lm.engine.close()
        if name == "two replicas":
            assert min(by_replica) > 0, by_replica  # both replicas served questions


def test_a_question_sticks_to_one_replica(model_dir, servers):
    lm = server_lm(model_dir, servers["a"].url, servers["b"].url)
    try:
        client = lm.engine.client
        key = b"1,2,3"
        assert {client.slot_for(key) for _ in range(5)} == {client.slot_for(key)}
        slots = {client.slot_for(str(i).encode()).replica for i in range(32)}
        assert slots == {0, 1}
    finally:
        lm.engine.close()


def test_loglikelihood_requests_get_a_clear_error(slm):
    from lm_eval.api.instance import Instance

    ll = Instance("loglikelihood", {}, ("Q: 2+2?\nA:", " 4"), idx=0)
    with pytest.raises(NotImplementedError, match="^softreason-server answers generate_until"):
        slm.loglikelihood([ll])


def test_compare_runs_its_cells_on_the_server(model_dir, servers, slm, tmp_path, monkeypatch):
    """``compare --engine server``: the cell records its engine (not the URL), and its greedy
    text is what the server model writes for the same prompt."""
    from lm_eval_softreason.analysis.compare import cli as compare_cli
    from tests.e2e.test_compare import SVAMP_ITEMS

    (tmp_path / "data" / "svamp").mkdir(parents=True)
    (tmp_path / "data" / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ITEMS))
    monkeypatch.setenv("SOFTREASON_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    assert compare_cli.main([
        "--model", model_dir, "--engine", "server", "--base-url", servers["a"].url,
        "--dtype", "float32", "--tasks", "svamp", "--strategies", "greedy",
        "--limit", "svamp=1:2", "--gen-kwargs", "max_gen_toks=8", "--out", str(out)]) == 0
    cell = json.loads((out / "cells" / "svamp__greedy.json").read_text())
    assert cell["spec"]["engine"] == "server" and cell["n"] == 1
    assert servers["a"].url not in json.dumps(cell)
    (sample, *_) = [json.loads(line) for line in
                    (out / "cells" / "svamp__greedy.samples.jsonl").read_text().splitlines()]
    (context, gen_kwargs), = sample["arguments"]
    slm.configure(mode="greedy", **FAST)
    assert sample["resps"] == [[slm.generate_until(
        [request(context, max_gen_toks=8, until=gen_kwargs["until"])])[0]]]


def test_compare_refuses_an_engine_without_its_endpoint(model_dir, tmp_path):
    from lm_eval_softreason.analysis.compare import cli as compare_cli

    with pytest.raises(SystemExit, match="--engine server needs it"):
        compare_cli.main(["--model", model_dir, "--engine", "server", "--tasks", "svamp",
                          "--strategies", "greedy", "--out", str(tmp_path / "out")])


# -- bad input: one clear error each ------------------------------------------------------------

@pytest.mark.fault(
    'softreason-server: a malformed base_url (no scheme, ftp, a path other '
    'than /v1, no host, a bad port)',
    'ConfigError naming the value and the accepted forms, before any '
    'connection')
@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://127.0.0.1:1/v1",
                                 "http://127.0.0.1:8000/v2", "http://:8000", "http://h:x/v1"])
def test_a_malformed_base_url_is_named(url):
    with pytest.raises(ConfigError, match="base_url"):
        parse_base_urls(url)


def test_the_endpoint_forms_lm_eval_users_write_are_accepted():
    assert parse_base_urls("http://127.0.0.1:8000/v1/completions|http://h:1") == \
        ["http://127.0.0.1:8000/v1", "http://h:1/v1"]


@pytest.mark.fault(
    'softreason-server: nothing listens at base_url',
    'ConfigError naming the URL and the command that starts a server, '
    'before the config, tokenizer or embedding table is read')
def test_a_server_that_is_down_is_named_before_any_model_work(model_dir, monkeypatch):
    import lm_eval_softreason.engines.server.engine as engine

    def no_model_work(*args, **kwargs):
        raise AssertionError("the model was read before the server was checked")

    monkeypatch.setattr(engine.AutoConfig, "from_pretrained", no_model_work)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ConfigError, match=f"cannot reach {url}.*enable-prompt-embeds"):
        server_lm(model_dir, url)


@pytest.mark.fault(
    'softreason-server: the server was started without --enable-prompt-'
    'embeds',
    "ConfigError with the server's message and the flag to add, at start")
def test_a_server_without_prompt_embeds_names_the_flag(model_dir, servers):
    with pytest.raises(ConfigError, match="started with --enable-prompt-embeds"):
        server_lm(model_dir, servers["plain"].url)


@pytest.mark.fault(
    "softreason-server: mode=sample or fire against a server with vLLM's "
    'default --max-logprobs',
    'ConfigError naming --max-logprobs -1, at start and on configure()')
def test_a_mode_that_reads_every_first_token_log_prob_names_max_logprobs(model_dir, servers):
    lm = server_lm(model_dir, servers["c"].url, mode="greedy")  # 2 log-probs: fine
    try:
        with pytest.raises(ConfigError, match="--max-logprobs -1"):
            lm.configure(mode="sample", n_samples=2)
    finally:
        lm.engine.close()
    with pytest.raises(ConfigError, match="--max-logprobs -1"):
        server_lm(model_dir, servers["c"].url, mode="fire")


@pytest.mark.fault(
    'softreason-server: the server answers HTTP 4xx (a prompt longer than '
    'its context)',
    "the server's message in the error, no retry")
def test_a_refused_request_shows_the_servers_message_without_retrying(slm):
    client = slm.engine.client
    retries = client.stats["retries"]
    started = time.monotonic()
    with pytest.raises(ServerRequestError, match="HTTP 400.*maximum context length is 512"):
        slm.engine.prefill([5] * 600)
    assert client.stats["retries"] == retries
    assert time.monotonic() - started < 5


# -- replicas killed mid-run (last: they use up servers b and c) ------------------------------

@pytest.mark.fault(
    'softreason-server: one of two replicas is killed (SIGKILL) mid-run',
    'its questions move to the other replica; the same answers, no fallback')
def test_a_killed_replica_hands_its_questions_to_the_other(model_dir, servers, slm, tmp_path):
    reference = traced(slm, tmp_path / "ref.jsonl", mode="greedy")
    lm = server_lm(model_dir, servers["a"].url, servers["b"].url, num_concurrent=2,
                   max_retries=1)
    original = lm._account

    def kill_after_first(u, s):  # a finished question: now the replica dies mid-run
        original(u, s)
        servers["b"].kill()

    lm._account = kill_after_first
    try:
        assert traced(lm, tmp_path / "failover.jsonl", mode="greedy") == reference
        info = lm.get_model_info()
        assert lm.engine.client.dead == {1}
        assert info["softreason_stats"]["fallbacks"] == 0
    finally:
        lm.engine.close()


@pytest.mark.fault(
    'softreason-server: the only replica is killed (SIGKILL) mid-run',
    'EngineUnavailable (one line) naming the endpoints; finished questions '
    'are in --use_cache, and a rerun decodes only the rest')
def test_no_replica_left_stops_the_run_and_a_rerun_resumes(model_dir, servers, slm, tmp_path):
    slm.configure(mode="greedy", **FAST)
    reference = slm.generate_until(reqs())
    db = str(tmp_path / "cache")
    lm = server_lm(model_dir, servers["c"].url, mode="greedy", num_concurrent=1, max_retries=1)
    original = lm._account
    finished = []

    def kill_after_first(u, s):
        original(u, s)
        finished.append(u)
        servers["c"].kill()

    lm._account = kill_after_first
    with pytest.raises(EngineUnavailable, match="every vllm serve endpoint is down.*resumes"):
        CachingLM(lm, db).generate_until(reqs())
    lm.engine.client.close()
    assert len(finished) >= 1
    rerun = server_lm(model_dir, servers["a"].url, mode="greedy")
    try:
        assert CachingLM(rerun, db).generate_until(reqs()) == reference
        stats = rerun.get_model_info()["softreason_stats"]
        assert stats["questions"] == len(PROMPTS) - len(finished)  # the rest came from cache
    finally:
        rerun.engine.close()


# -- the literal command: the stock CLI, a real model, one server and two ---------------------

SHARED_GET_MODEL = os.path.join(ROOT, "..", "shared", "assets", "get-model")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SHARED_GET_MODEL), reason="no ../shared/assets")
def test_the_stock_cli_gives_the_same_samples_with_one_server_and_two(tmp_path):
    """``lm_eval --model softreason-server ... --tasks svamp`` on SmolLM2-135M-Instruct (built
    from ../shared/assets), chat template, float32: the same samples against one server and
    against two replicas, and both replicas served."""
    import subprocess
    import sys

    folder = str(tmp_path / "smollm2")
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    subprocess.run([SHARED_GET_MODEL, "smollm2", folder], check=True, env=env, timeout=900)
    flags = ["--dtype", "float32", "--max-model-len", "2048", "--seed", "0", "--enforce-eager"]
    servers = [LocalServer(folder, tmp_path, *flags), LocalServer(folder, tmp_path, *flags)]
    try:
        for s in servers:
            s.wait()
        runs = {}
        for name, urls in (("one", servers[0].url), ("two", f"{servers[0].url}|{servers[1].url}")):
            out = tmp_path / name
            done = subprocess.run(
                [os.path.join(bin_dir, "lm_eval"), "--model", "softreason-server",
                 "--model_args", f"base_url={urls},pretrained={folder},max_rounds=1,n_init=3,"
                                 "batch=2,verifier_max_tokens=32",
                 "--tasks", "svamp", "--limit", "2", "--apply_chat_template",
                 "--gen_kwargs", "max_gen_toks=48", "--log_samples", "--output_path", str(out)],
                capture_output=True, text=True, env=env, timeout=1200)
            assert done.returncode == 0, done.stderr[-3000:]
            (samples,) = out.rglob("samples_svamp_*.jsonl")
            (results,) = out.rglob("results_*.json")
            config = json.loads(results.read_text())["config"]
            logged = [json.loads(line) for line in samples.read_text().splitlines()]
            runs[name] = ({(x["doc_id"], x["filter"]): x["resps"] for x in logged},
                          config["softreason_engine"]["by_replica"])
        assert runs["one"][0] == runs["two"][0]
        assert {doc for doc, _ in runs["one"][0]} == {0, 1}
        assert all(r[0][0].strip() for r in runs["one"][0].values())
        assert len(runs["two"][1]) == 2 and min(runs["two"][1]) > 0  # both replicas served
    finally:
        for s in servers:
            s.stop()
