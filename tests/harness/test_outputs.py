"""Where results go: an unwritable ``--output_path`` is refused before any model work, and a
save that fails at the end anyway exits non-zero, saying where the finished answers are."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lm_eval_softreason.harness.outputs import OutputPathError, check_output_path, not_saved_message
from tests.e2e.test_plugin import BIN, ROOT, data_dir, run  # noqa: F401  (data_dir: a fixture)

MISSING_MODEL = "/nonexistent/model-never-loaded"


@pytest.mark.parametrize("relative", ["out", "out/results.json", "a/b/c"])
def test_a_creatable_output_path_passes(tmp_path, relative):
    check_output_path(str(tmp_path / relative))


@pytest.mark.parametrize("relative", ["file/out", "file/out/results.json", "file"])
def test_an_output_path_under_a_regular_file_is_named(tmp_path, relative):
    (tmp_path / "file").write_text("")
    path = tmp_path / relative
    with pytest.raises(OutputPathError) as err:
        check_output_path(str(path))
    assert str(err.value) == (f"--output_path {path}: {tmp_path / 'file'} is a file, not a "
                              f"folder, so the results cannot be written there; choose another "
                              f"--output_path")


def test_the_not_saved_message_says_why_and_where_the_answers_are(tmp_path):
    (tmp_path / "file").write_text("")
    bad = str(tmp_path / "file" / "out")
    assert not_saved_message(bad, ["the trace t.jsonl"]) == (
        f"lm-eval could not write the results to --output_path {bad} ({tmp_path / 'file'} is "
        f"a file, not a folder, so the results cannot be written there; choose another "
        f"--output_path); the finished answers are in the trace t.jsonl")
    assert not_saved_message(str(tmp_path), []) == (
        f"lm-eval could not write the results to --output_path {tmp_path} (see lm-eval's log "
        f"for the reason); no trace or --use_cache held the answers, so the run must be "
        f"repeated")


@pytest.mark.fault("--output_path under a regular file (our CLI)",
                   "refused before the model loads: one line naming the path, exit 2")
def test_our_cli_refuses_an_unwritable_output_path_before_loading(data_dir, tmp_path):
    (tmp_path / "file").write_text("")
    out = run([str(BIN / "lm-eval-softreason"), "--model", "softreason", "--model_args",
               f"pretrained={MISSING_MODEL}", "--tasks", "svamp", "--limit", "1",
               "--output_path", str(tmp_path / "file" / "out")], data_dir, tmp_path)
    assert out.returncode == 2
    assert out.stderr == (f"lm-eval-softreason: error: --output_path "
                          f"{tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is a file, not a "
                          f"folder, so the results cannot be written there; choose another "
                          f"--output_path\n")


@pytest.mark.slow
@pytest.mark.fault("--output_path under a regular file (stock lm_eval CLI)",
                   "refused when the model is built, before it loads; exit 1")
def test_stock_cli_refuses_an_unwritable_output_path_before_loading(data_dir, tmp_path):
    (tmp_path / "file").write_text("")
    out = run([str(BIN / "lm_eval"), "--model", "softreason", "--model_args",
               f"pretrained={MISSING_MODEL}", "--tasks", "svamp", "--limit", "1",
               "--output_path", str(tmp_path / "file" / "out")], data_dir, tmp_path)
    assert out.returncode == 1
    # the last thing said is our error: the model (which does not exist) was never loaded
    assert out.stderr.splitlines()[-1] == (
        f"lm_eval_softreason.harness.outputs.OutputPathError: --output_path "
        f"{tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is a file, not a folder, so the "
        f"results cannot be written there; choose another --output_path")


@pytest.mark.slow
@pytest.mark.fault("output folder replaced by a file mid-run (results cannot be saved)",
                   "exit non-zero naming the path, the trace and the --use_cache database; "
                   "a rerun with a writable path decodes nothing again")
@pytest.mark.parametrize("cli", ["lm_eval", "lm-eval-softreason"])
def test_a_failed_save_exits_non_zero_and_says_where_the_answers_are(tiny_model_dir, data_dir,
                                                                     tmp_path, cli):
    out_dir, trace, cache = tmp_path / "out", tmp_path / "trace.jsonl", tmp_path / "cache"
    args = ["--model", "softreason", "--model_args",
            f"pretrained={tiny_model_dir},max_rounds=0,n_init=2,proj_dim=4,"
            f"verifier=tests.plugins:blocks_the_output_path,trace_path={trace}",
            "--include_path", str(ROOT / "tasks"), "--tasks", "svamp", "--limit", "2",
            "--gen_kwargs", "max_gen_toks=4", "--use_cache", str(cache)]
    failed = run([str(BIN / cli), *args, "--output_path", str(out_dir)], data_dir, tmp_path,
                 BLOCK_PATH=str(out_dir), PYTHONPATH=str(ROOT))
    assert failed.returncode == {"lm_eval": 1, "lm-eval-softreason": 2}[cli]
    assert (f"lm-eval could not write the results to --output_path {out_dir} ({out_dir} is a "
            f"file, not a folder, so the results cannot be written there; choose another "
            f"--output_path); the finished answers are in the trace {trace} and the "
            f"--use_cache database {cache}_rank*.db") in failed.stderr
    assert len(trace.read_text().splitlines()) == 2
    rerun = run([str(BIN / cli), *args, "--output_path", str(tmp_path / "again")], data_dir,
                tmp_path, PYTHONPATH=str(ROOT), BLOCK_PATH=str(tmp_path / "unused"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not (tmp_path / "unused").exists()  # served from the cache: the verifier never ran
    assert len(list((tmp_path / "again").rglob("results_*.json"))) == 1
