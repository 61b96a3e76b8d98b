"""model_args parsing and validation: every bad value is named with what is allowed."""

from __future__ import annotations

import dataclasses
import json
import math
import pytest

from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.strategies.config import (
    AFFECTS,
    RUN_ONLY_ARGS,
    SoftReasonConfig,
    settings_affecting,
)
from lm_eval_softreason.scoring.coherence import resolve_coherence
from lm_eval_softreason.scoring.verification import resolve_verifier_spec
from tests.helpers import ROOT



def parse(**kwargs):
    return SoftReasonConfig.from_kwargs(kwargs)


def test_split_keeps_hflm_args_out_of_our_config():
    cfg, rest = parse(pretrained="m", sigma="0.5", batch=3, dtype="float32", device="cpu")
    assert cfg.sigma == 0.5 and cfg.batch == 3
    assert rest == {"pretrained": "m", "dtype": "float32", "device": "cpu"}


def test_presets_set_defaults_and_explicit_args_win():
    paper, _ = parse()
    ref, _ = parse(preset="reference")
    assert (paper.coherence, paper.select, paper.inject) == ("geo_mean_prob", "best", "perturb")
    assert (ref.coherence, ref.select, ref.inject) == ("mean_prob", "vote", "replace")
    custom, _ = parse(preset="reference", select="best")
    assert custom.select == "best" and custom.coherence == "mean_prob"


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"sigma": 0}, "sigma=0.0 is out of range; allowed: > 0"),
        ({"sigma": -1}, "sigma=-1.0 is out of range"),
        ({"sigma": "abc"}, "sigma='abc' is not a number"),
        ({"sigma": "nan"}, "sigma=nan must be a finite number"),
        ({"proj_dim": 0}, "proj_dim=0 is out of range; allowed: >= 1"),
        ({"batch": 0}, "batch=0 is out of range; allowed: >= 1"),
        ({"n_init": "2.5"}, "n_init='2.5' is not an integer"),
        ({"mode": "greddy"}, "mode='greddy' is invalid; allowed: softreason, greedy"),
        ({"select": "majority"}, "select='majority' is invalid; allowed: best, vote, vote_candidates, "
                                       "vote_verifier_weighted, vote_coherence_weighted"),
        ({"preset": "papr"}, "preset='papr' is invalid; allowed: paper, reference, tuned"),
        ({"search": "grid"}, "search='grid' is invalid"),
        ({"sigmma": 1}, "unknown model_arg 'sigmma'; did you mean 'sigma'?"),
    ],
)
def test_bad_values_are_named(args, fragment):
    with pytest.raises(ConfigError) as err:
        parse(**args)
    assert fragment in str(err.value)


def test_fingerprint_ignores_paths_but_not_settings():
    a, _ = parse(trace_path="/tmp/a.jsonl")
    b, _ = parse(trace_path="/tmp/b.jsonl")
    c, _ = parse(sigma=0.5)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_only_settings_that_draw_candidates_seed_the_search():
    """Runs that differ only in how candidates are scored or chosen search the same
    candidates; at the defaults the seeds are the fingerprint's, as before
    ``search_fingerprint`` existed."""
    best, _ = parse()
    scored = [parse(select="vote_coherence_weighted")[0], parse(verifier="multi_judge")[0],
              parse(coherence="mean_prob")[0], parse(w_verifier=0.5, w_coherence=2.0)[0]]
    assert all(c.fingerprint() != best.fingerprint() for c in scored)
    assert {c.search_fingerprint() for c in scored} == {best.fingerprint()}
    drawn = [parse(sigma=0.5)[0], parse(inject="replace")[0], parse(n_init=2)[0],
             parse(verifier_max_tokens=256)[0], parse(seed=7)[0]]
    assert all(c.search_fingerprint() != best.search_fingerprint() for c in drawn)


def test_a_preset_seeds_the_search_by_its_values_not_its_name():
    """preset=tuned searches what the committed tuning cell it came from searched
    (docs/tuning.md, `shape`: the paper preset with 8 initial candidates and no BO round), so
    the cell's trace, re-selected by ``rescore``, is what the preset returns on those problems."""
    cell_file = ROOT / "docs/results/tuning/svamp-shape-init8-std2/cells/svamp__softreason.json"
    cell, _ = parse(**json.loads(cell_file.read_text())["spec"]["model_args"])
    tuned, _ = parse(preset="tuned")
    assert (tuned.sigma, tuned.sigma_scale, tuned.select, tuned.inject, tuned.verifier,
            tuned.n_init, tuned.max_rounds) == (
        2.0, "embedding_std", "vote_coherence_weighted", "perturb", "none", 8, 0)
    assert (cell.preset, cell.verifier, cell.select) == ("paper", "self", "best")
    assert tuned.fingerprint() != cell.fingerprint()
    assert tuned.search_fingerprint() == cell.search_fingerprint()
    ref, _ = parse(preset="reference")
    assert ref.search_fingerprint() != parse()[0].search_fingerprint()  # other values


def test_fingerprint_is_stable():
    """Question keys, seeds and trace records hash it: a change here changes every answer.
    The values are those of the code before the settings' metadata was declared on the
    fields (issue #29): traces, caches and golden outputs depend on them."""
    default, _ = parse()
    assert default.fingerprint() == "9a21803d61784a86"
    assert default.search_fingerprint() == "9a21803d61784a86"
    other, _ = parse(preset="tuned", sigma=0.5, select="vote", verifier="multi_judge",
                     coherence="math:fsum", max_rounds=2, temperature=0.9, trace_path="/x",
                     max_active=3)
    assert other.fingerprint() == "00e92e74d6790351"
    assert other.search_fingerprint() == "70116c8ef9ce2c9b"
    plugin, _ = parse(coherence=math.fsum, bo_workers=2)  # a callable is named by import path
    assert plugin.fingerprint() == "0772786e9463f436"
    assert plugin.search_fingerprint() == "9a21803d61784a86"
    run_only, _ = parse(trace_path="/x", num_threads=2, bo_workers=3, max_active=2,
                        max_fallback_rate=0.5)
    assert run_only.public_dict() == default.public_dict()
    assert "sigma" in default.public_dict() and "trace_path" not in default.public_dict()


def test_every_setting_declares_what_it_changes():
    """Each field says whether it changes the search draw, only the scoring, or neither; the
    fingerprints, the cache guard, gate and compare read that one declaration."""
    fields = dataclasses.fields(SoftReasonConfig)
    assert [f.name for f in fields if f.metadata.get("affects") not in AFFECTS] == []
    assert settings_affecting("scoring") == (
        "preset", "verifier", "coherence", "w_verifier", "w_coherence", "select")
    assert settings_affecting("none") == (
        "trace_path", "num_threads", "bo_workers", "max_active", "max_fallback_rate")
    assert settings_affecting(*AFFECTS) == tuple(f.name for f in fields)
    assert set(settings_affecting("none")) < RUN_ONLY_ARGS
    assert tuple(parse()[0].public_dict()) == settings_affecting("search", "scoring")
    with pytest.raises(ValueError, match=r"unknown kinds \['scored'\]"):
        settings_affecting("scored")


def test_coherence_and_verifier_resolution():
    assert resolve_coherence("mean_prob")([0.0, 0.0]) == 1.0
    assert resolve_coherence("math:fsum")([1.0, 2.0]) == 3.0  # import path
    assert resolve_verifier_spec("self") == "self"
    assert callable(resolve_verifier_spec("tests.plugins:always_first"))
    with pytest.raises(ConfigError, match="coherence='bogus' is unknown; built-ins: geo_mean"):
        resolve_coherence("bogus")
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.mod'"):
        resolve_verifier_spec("no_such_pkg.mod:fn")
    with pytest.raises(ConfigError, match="'math' has no 'nope'"):
        resolve_coherence("math:nope")
    with pytest.raises(ConfigError, match="'pi' is not callable"):
        resolve_coherence("math:pi")
    with pytest.raises(ConfigError, match="verifier='judge' is unknown"):
        resolve_verifier_spec("judge")
