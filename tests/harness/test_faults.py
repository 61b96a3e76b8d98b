"""Fault injection: each fault a user or the environment can cause, and what it must do.

Every case carries ``@pytest.mark.fault(fault, outcome)``; ``python -m tests.fault_table``
lists the cases of every test file under tests/ in docs/faults.md, and the last test here fails when that
page is out of date. Faults a model meets are injected at model construction (they must be
refused before any weights load); faults of the command line go through ``cli.main``
in-process where they are refused before lm-eval starts, and through the real console script
(slow) where the point is the process: its exit code, its stderr, a second process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from lm_eval.api.model import CachingLM

from lm_eval_softreason import cli, data
from lm_eval_softreason.analysis.compare.run import close_cache
from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.data import DataDirError
from lm_eval_softreason.errors import UserError
from lm_eval_softreason.harness.hf_model import SoftReasonLM
from lm_eval_softreason.harness.preflight import check_cli_args, check_pretrained, check_weight_file
from lm_eval_softreason.settings import CACHE_CONFIG_KEY
from lm_eval_softreason.trace import TraceError, TraceWriter, read_trace
from lm_eval_softreason.writer_lock import LockedError
from tests import fault_table
from tests.fault_hooks import HOLD_ENV
from tests.helpers import ROOT
from tests.unit.test_data import write_data_dir

ERROR = "lm-eval-softreason: error: "
LOCKED = "is being written by another process (pid {pid}); wait for it to finish or choose " \
         "another path"
# Holds WriterLock(argv[1]) until its stdin closes or it is killed.
HOLDER = ("import sys; from lm_eval_softreason.writer_lock import WriterLock; "
          "WriterLock(sys.argv[1], 'test'); print('held', flush=True); sys.stdin.read()")
SVAMP = [{"ID": f"chal-{i}", "Body": f"Tom had {i + 3} apples.",
          "Question": "He ate 2. How many are left?", "Equation": f"( {i + 3}.0 - 2.0 )",
          "Answer": float(i + 1), "Type": "Subtraction"} for i in range(2)]
SMALL_ARGS = "max_rounds=1,n_init=2,batch=2,proj_dim=4,verifier_max_tokens=4"


@pytest.fixture
def hold():
    """Start a process that holds the writer lock of a path (killed at teardown)."""
    procs: list[subprocess.Popen] = []

    def _hold(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "held\n"
        return proc

    yield _hold
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def svamp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder with a two-problem SVAMP only, set as SOFTREASON_DATA_DIR."""
    root = tmp_path / "svamp-data"
    (root / "svamp").mkdir(parents=True)
    (root / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP), encoding="utf-8")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    return root


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``cli.main(args)`` in this process: its exit code and stderr."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    return exited.value.code, capsys.readouterr().err


# --- one writer per trace and per --use_cache database -----------------------------------------


@pytest.mark.fault("a second writer on a trace another process writes",
                   "refused at start naming the trace and the other pid; free again once "
                   "that process ends, normally or by kill -9")
def test_a_trace_another_process_writes_is_refused_until_it_dies(tmp_path, hold):
    path = tmp_path / "t.jsonl"
    holder = hold(path)
    with pytest.raises(LockedError) as info:
        TraceWriter(path)
    assert str(info.value) == f"trace_path {path} " + LOCKED.format(pid=holder.pid)
    holder.kill()
    holder.wait()
    assert (tmp_path / "t.jsonl.lock").read_text() == f"{holder.pid}\n"  # left behind, unlocked
    writer = TraceWriter(path)
    writer.write({"question": "q1"})
    writer.close()
    assert read_trace(path) == [{"question": "q1"}]
    assert not (tmp_path / "t.jsonl.lock").exists()
    holder = hold(path)
    holder.stdin.close()  # a normal exit removes the lock file too
    assert holder.wait() == 0
    assert not (tmp_path / "t.jsonl.lock").exists()


@pytest.mark.fault("the ranks of one data-parallel run (accelerate launch) on one trace",
                   "each rank holds a lock of its own (RANK=r: <path>.rank<r>.lock), so they "
                   "share the trace; a second run meets rank 0's")
def test_the_ranks_of_one_run_share_their_trace(tmp_path, hold, monkeypatch):
    path = tmp_path / "t.jsonl"
    rank_0 = hold(path)
    monkeypatch.setenv("RANK", "1")
    writer = TraceWriter(path)
    assert (tmp_path / "t.jsonl.rank1.lock").read_text() == f"{os.getpid()}\n"
    assert (tmp_path / "t.jsonl.lock").read_text() == f"{rank_0.pid}\n"
    writer.close()
    assert not (tmp_path / "t.jsonl.rank1.lock").exists()


@pytest.mark.fault("a second writer on a --use_cache database another process writes",
                   "refused at start naming the database file and the other pid")
def test_a_cache_another_process_writes_is_refused(configure, tmp_path, hold):
    db = tmp_path / "cache_rank0.db"
    holder = hold(db)
    with pytest.raises(LockedError) as info:
        CachingLM(configure(), str(db))
    assert str(info.value) == f"--use_cache database {db} " + LOCKED.format(pid=holder.pid)


@pytest.mark.fault("compare's cells reopening traces and caches in one process",
                   "each is unlocked when configure() or close_cache() lets go of it")
def test_configure_and_close_release_the_locks(configure, tmp_path, hold):
    first, second, db = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c_rank0.db"
    lm = configure(trace_path=str(first))
    lm.configure(trace_path=str(first))  # the same trace again in this process
    assert (tmp_path / "a.jsonl.lock").read_text() == f"{os.getpid()}\n"
    lm = configure(trace_path=str(second))
    CachingLM(lm, str(db))
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == ["b.jsonl.lock", "c_rank0.db.lock"]
    close_cache(lm)
    lm.close_trace()
    assert list(tmp_path.glob("*.lock")) == []
    for path in (first, second, db):  # another process may take each of them now
        hold(path)


@pytest.mark.slow
@pytest.mark.fault("two concurrent CLI runs on one trace or one --use_cache",
                   "the second exits 2 with one line naming the path and the first's pid; "
                   "after the first is killed (kill -9) the same command runs")
def test_a_second_cli_run_on_the_same_paths_is_refused(tiny_model_dir, svamp_dir, tmp_path):
    trace, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    env = {**os.environ, HOLD_ENV: str(hold_dir)}

    def command(trace_path: Path, use_cache: Path) -> list[str]:
        return [sys.executable, "-m", "lm_eval_softreason", "--model", "softreason",
                "--model_args", f"pretrained={tiny_model_dir},{SMALL_ARGS},trace_path="
                f"{trace_path},verifier=tests.fault_hooks:hold_until_released",
                "--tasks", "svamp", "--limit", "2", "--gen_kwargs", "max_gen_toks=6",
                "--use_cache", str(use_cache)]

    first = subprocess.Popen(command(trace, cache), cwd=ROOT, env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (hold_dir / "held").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        seconds = [subprocess.Popen(command(*paths), cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for paths in [(trace, tmp_path / "other"), (tmp_path / "u.jsonl", cache)]]
        same_trace, same_cache = [p.communicate(timeout=300)[1] for p in seconds]
        assert [p.returncode for p in seconds] == [2, 2]
        locked = LOCKED.format(pid=first.pid)
        assert same_trace.splitlines()[-1] == f"{ERROR}trace_path {trace} {locked}"
        assert same_cache.splitlines()[-1] == \
            f"{ERROR}--use_cache database {cache}_rank0.db {locked}"
        assert "Traceback" not in same_trace + same_cache
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    (hold_dir / "release").touch()
    again = subprocess.run(command(trace, cache), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(read_trace(trace)) == 2
    assert list(tmp_path.glob("*.lock")) == []


# --- the data folder, checked before the model loads -------------------------------------------


@pytest.mark.fault("an empty data file: SVAMP.json is [], a gsm8k jsonl has no lines",
                   "refused before the model loads, naming the file and the expected layout")
@pytest.mark.parametrize("relative, content", [("svamp/SVAMP.json", "[]"),
                                               ("gsm8k/test.jsonl", ""),
                                               ("gsm8k/train.jsonl", "\n")])
def test_an_empty_data_file_is_refused_before_the_model_loads(tmp_path, monkeypatch, relative,
                                                              content):
    root = write_data_dir(tmp_path / "data")
    (root / relative).write_text(content, encoding="utf-8")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    with pytest.raises(DataDirError) as info:
        SoftReasonLM(pretrained=str(tmp_path / "never-loaded"))
    assert str(info.value) == (f"SOFTREASON_DATA_DIR={str(root)!r}: cannot read "
                               f"{root / relative} (it holds no problems); {data._LAYOUT}")


@pytest.mark.fault("SOFTREASON_DATA_DIR names no folder, or a folder without the layout",
                   "refused before the model loads, naming the path and the expected layout")
@pytest.mark.parametrize("folder, problem", [("missing", "not an existing folder"),
                                             ("empty", "holds none of the expected files")])
def test_a_data_dir_without_the_layout_is_refused_before_the_model_loads(tmp_path, monkeypatch,
                                                                         folder, problem):
    root = tmp_path / folder
    if folder == "empty":
        root.mkdir()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    with pytest.raises(DataDirError) as info:
        SoftReasonLM(pretrained=str(tmp_path / "never-loaded"))
    assert str(info.value) == f"SOFTREASON_DATA_DIR={str(root)!r}: {problem}; {data._LAYOUT}"


@pytest.mark.fault("--tasks that read data files SOFTREASON_DATA_DIR lacks (or it is unset)",
                   "our CLI exits 2 with one line naming the missing files, before lm-eval "
                   "starts")
def test_the_cli_checks_the_files_of_the_requested_tasks(svamp_dir, monkeypatch, capsys):
    args = ["--model", "hf", "--model_args", "pretrained=unused", "--tasks", "svamp",
            "gsm8k_cot_offline", "--limit", "1"]
    code, err = run_cli(capsys, *args)
    missing = ", ".join(str(svamp_dir / f) for f in data.GSM8K_FILES)
    assert (code, err) == (2, f"{ERROR}SOFTREASON_DATA_DIR={str(svamp_dir)!r}: missing "
                              f"{missing}; {data._LAYOUT}\n")
    monkeypatch.delenv(data.DATA_DIR_ENV)
    code, err = run_cli(capsys, *args)
    assert (code, err) == (2, f"{ERROR}{data._gsm8k_unset_error()}\n")
    check_cli_args(["--tasks", "svamp,gsm8k"])  # SVAMP from the Hub, lm-eval's own gsm8k


# --- the model folder, checked before it loads -------------------------------------------------


@pytest.mark.fault("pretrained= a local model folder that does not exist",
                   "refused before loading, naming the path (not transformers' 'Repo id "
                   "must be in the form')")
@pytest.mark.parametrize("name", ["./no-such-model", "~/no-such-model", "{tmp}/no/such/model"])
def test_a_missing_model_folder_is_named(tmp_path, name):
    name = name.format(tmp=tmp_path)
    with pytest.raises(UserError) as info:
        SoftReasonLM(pretrained=name)
    assert str(info.value) == (f"model_arg pretrained={name!r}: no such model folder "
                               f"({Path(name).expanduser().absolute()})")
    check_pretrained("org/model")  # a Hub id, left to transformers


@pytest.mark.fault("pretrained= a file instead of the model folder",
                   "refused before loading, naming the file")
def test_a_model_path_that_is_a_file_is_refused(tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(UserError) as info:
        SoftReasonLM(pretrained=str(config))
    assert str(info.value) == (f"model_arg pretrained={str(config)!r}: {config} is a file; give "
                               f"the folder that holds the model's config.json and weights")


def _truncate(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    return f"weight file {path} is truncated: {size // 2} bytes, its header describes {size}"


def _cut_to_four_bytes(path: Path) -> str:
    with open(path, "r+b") as fh:
        fh.truncate(4)
    return f"weight file {path} is truncated (4 bytes)"


def _garble_header(path: Path) -> str:
    path.write_bytes(struct.pack("<Q", 16) + b"not a json head!" + b"\0" * 64)
    return (f"weight file {path} is not a readable safetensors file (its header is truncated "
            f"or corrupt)")


def _make_unreadable(path: Path) -> str:
    path.unlink()
    path.mkdir()  # root reads any file; a folder cannot be read as one
    return f"weight file {path} cannot be read (Is a directory)"


@pytest.mark.fault("a truncated, garbled or unreadable weight file in the model folder",
                   "refused before loading, naming the file")
@pytest.mark.parametrize("damage", [_truncate, _cut_to_four_bytes, _garble_header,
                                    _make_unreadable],
                         ids=["truncated", "four-bytes", "garbled-header", "unreadable"])
def test_a_damaged_safetensors_file_is_named(tiny_model_dir, tmp_path, damage):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    weights = model / "model.safetensors"
    check_weight_file(weights)  # intact: accepted
    message = damage(weights)
    with pytest.raises(UserError) as info:
        SoftReasonLM(pretrained=str(model))
    assert str(info.value) == message


@pytest.mark.fault("a truncated pytorch_model.bin (torch.save zip)",
                   "refused before loading, naming the file")
def test_a_truncated_bin_weight_file_is_named(tmp_path):
    import torch

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(64)}, path)
    check_weight_file(path)  # intact: accepted
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 100)
    with pytest.raises(UserError) as info:
        check_weight_file(path)
    assert str(info.value) == (f"weight file {path} is truncated or corrupt (its zip directory "
                               f"cannot be read)")


# --- the trace -----------------------------------------------------------------------------


@pytest.mark.fault("trace_path= given empty", "refused before the model loads (it used to "
                   "silently turn the trace off)")
def test_an_empty_trace_path_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        SoftReasonLM(pretrained=str(tmp_path / "never-loaded"), trace_path="")
    assert str(info.value) == ("model_arg trace_path='' is empty; give a file path, or leave "
                               "trace_path out for no trace")


@pytest.mark.fault("a trace path under a regular file",
                   "refused before the model loads, naming the file in the way")
def test_a_trace_path_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file")
    path = blocker / "run" / "trace.jsonl"
    with pytest.raises(TraceError) as info:
        SoftReasonLM(pretrained=str(tmp_path / "never-loaded"), trace_path=str(path))
    assert str(info.value) == (f"trace_path {path}: cannot create its folder ({blocker} is a "
                               f"file, not a folder)")


@pytest.mark.fault("a corrupt line inside a trace (not the partial last line of a kill)",
                   "reading or reopening it names the file and the line number")
@pytest.mark.parametrize("bad, problem", [
    ("not json\n", "not a JSON record (Expecting value: line 1 column 1 (char 0))"),
    ('["a list"]\n', "not a JSON object"),
])
def test_a_corrupt_trace_names_the_file_and_line(tmp_path, bad, problem):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"question": "q1"}\n' + bad + '{"question": "q3"}\n', encoding="utf-8")
    expected = f"trace {path}, line 2: {problem}"
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert str(info.value) == expected
    with pytest.raises(TraceError) as info:
        TraceWriter(path)
    assert str(info.value) == expected
    assert not Path(f"{path}.lock").exists()  # a refused writer leaves no lock behind


# --- the --use_cache database ----------------------------------------------------------------


def _sqlite_dict(path: Path, entries: dict) -> Path:
    from sqlitedict import SqliteDict

    with SqliteDict(str(path), autocommit=True) as db:
        db.update(entries)
    return path


@pytest.mark.fault("a --use_cache file that is not an SQLite database, or a corrupt one",
                   "our CLI exits 2 with one line naming the file, before lm-eval opens it")
@pytest.mark.parametrize("damage, problem", [
    ("garbage", "is not a readable SQLite database (file is not a database)"),
    ("freelist", "is corrupt (SQLite's quick_check: *** in database main *** Main freelist: "
                 "size is 0 but should be 7)"),
])
def test_a_corrupt_cache_database_is_named(tmp_path, capsys, damage, problem):
    db = tmp_path / "cache_rank0.db"
    if damage == "garbage":
        db.write_bytes(b"not sqlite " * 100)
    else:
        _sqlite_dict(db, {f"k{i}": "x" * 500 for i in range(20)})
        with open(db, "r+b") as fh:  # the header's freelist count (offset 36) made wrong
            fh.seek(36)
            fh.write(struct.pack(">I", 7))
    code, err = run_cli(capsys, "--model", "softreason", "--use_cache", str(tmp_path / "cache"))
    assert (code, err) == (2, f"{ERROR}--use_cache {tmp_path / 'cache'}: {db} {problem}; move "
                              f"it aside or choose another --use_cache path\n")


@pytest.mark.fault("a --use_cache database with a damaged page, opened by the model",
                   "refused, naming the database (the model's guard; the stock CLI too)")
def test_a_damaged_cache_page_is_named_by_the_model(configure, tmp_path):
    db = _sqlite_dict(tmp_path / "cache.db", {"k": "v"})
    with open(db, "r+b") as fh:  # the table's page (the third of 4 KiB)
        fh.seek(2 * 4096)
        fh.write(b"\xff" * 4096)
    with pytest.raises(UserError) as info:
        CachingLM(configure(), str(db))
    assert str(info.value) == (f"--use_cache database {db} is not readable (database disk image "
                               f"is malformed); move it aside or choose another --use_cache path")
    assert not Path(f"{db}.lock").exists()


@pytest.mark.fault("--model hf (or no --model) on a --use_cache holding softreason results",
                   "our CLI exits 2 with one line: hf would serve softreason's answers as its "
                   "own")
@pytest.mark.parametrize("model", [["--model", "hf"], ["-M", "vllm"], []])
def test_another_model_on_a_softreason_cache_is_refused(tmp_path, capsys, model):
    db = _sqlite_dict(tmp_path / "c_rank0.db", {CACHE_CONFIG_KEY: {"mode": "softreason"}})
    name = model[1] if model else "hf"
    code, err = run_cli(capsys, *model, "-c", str(tmp_path / "c"))
    assert (code, err) == (2, f"{ERROR}--use_cache {tmp_path / 'c'}: {db} holds softreason "
                              f"results, which --model {name} would serve as its own (lm-eval's "
                              f"cache keys on the prompt only); give --model {name} its own "
                              f"--use_cache path\n")
    check_cli_args(["--model", "softreason", "--use_cache", str(tmp_path / "c")])  # ours: fine


# --- how a user error ends the program -------------------------------------------------------


@pytest.mark.fault("any user error in lm-eval-softreason, asked for a traceback",
                   "one line and exit 2 by default; the traceback with --verbosity DEBUG, "
                   "LMEVAL_LOG_LEVEL=DEBUG or LM_EVAL_SOFTREASON_TRACEBACK=1")
@pytest.mark.parametrize("extra, env", [([], {}), (["--verbosity", "DEBUG"], {}),
                                        (["--verbosity=DEBUG"], {}), (["-v", "debug"], {}),
                                        ([], {"LMEVAL_LOG_LEVEL": "DEBUG"}),
                                        ([], {"LM_EVAL_SOFTREASON_TRACEBACK": "1"})],
                         ids=["default", "verbosity", "verbosity=", "-v", "log-level", "env"])
def test_a_user_error_is_one_line_unless_a_traceback_is_asked_for(tmp_path, capsys, monkeypatch,
                                                                  extra, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "c_rank0.db").write_bytes(b"not sqlite " * 100)
    args = ["--model", "softreason", "--use_cache", str(tmp_path / "c"), *extra]
    if not extra and not env:
        code, err = run_cli(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith(ERROR)
    else:
        with pytest.raises(UserError, match="is not a readable SQLite database"):
            cli.main(args)


@pytest.mark.slow
@pytest.mark.fault("a user error in a real lm-eval-softreason run (missing model folder)",
                   "exit 2, the message as stderr's last line, no traceback; with --verbosity "
                   "DEBUG the traceback")
def test_the_console_script_prints_one_line(svamp_dir, tmp_path):
    missing = tmp_path / "no-model"
    cmd = [str(Path(sys.executable).with_name("lm-eval-softreason")), "--model", "softreason",
           "--model_args", f"pretrained={missing}", "--tasks", "svamp", "--limit", "1"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 2, quiet.stderr[-3000:]
    assert quiet.stderr.splitlines()[-1] == (f"{ERROR}model_arg pretrained={str(missing)!r}: no "
                                             f"such model folder ({missing})")
    assert "Traceback" not in quiet.stderr
    loud = subprocess.run([*cmd, "--verbosity", "DEBUG"], capture_output=True, text=True,
                          timeout=600)
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.splitlines()[-1] == (f"lm_eval_softreason.errors.UserError: model_arg "
                                            f"pretrained={str(missing)!r}: no such model folder "
                                            f"({missing})")


# --- the table of faults ---------------------------------------------------------------------


def test_docs_faults_md_is_up_to_date():
    """docs/faults.md lists every fault marker under tests/; regenerate it with
    ``python -m tests.fault_table``."""
    cases = fault_table.fault_cases()
    assert "tests/harness/test_faults.py::test_an_empty_trace_path_is_refused" in \
        [c.test_id for c in cases]
    assert fault_table.TABLE.read_text(encoding="utf-8") == fault_table.render(cases), \
        "docs/faults.md is out of date: run python -m tests.fault_table"


def test_the_fault_table_reads_markers_of_any_test_file(tmp_path):
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_other.py").write_text(
        "import pytest\nfrom pytest import mark\n\n\n"
        "@pytest.mark.slow\n@pytest.mark.fault('disk full', 'one line | exit 2')\n"
        "def test_a():\n    pass\n\n\nclass TestB:\n"
        "    @mark.fault(fault='a\\n  b', outcome='c')\n    def test_c(self):\n        pass\n\n\n"
        "def test_unmarked():\n    pass\n")
    cases = fault_table.fault_cases(tmp_path / "tests")
    assert cases == [("disk full", "one line | exit 2", "tests/unit/test_other.py::test_a"),
                     ("a\n  b", "c", "tests/unit/test_other.py::TestB::test_c")]
    assert fault_table.render(cases).endswith(
        "| disk full | one line \\| exit 2 | `tests/unit/test_other.py::test_a` |\n"
        "| a b | c | `tests/unit/test_other.py::TestB::test_c` |\n")


def test_sqlite_dict_uses_the_table_the_cli_reads(tmp_path):
    """check_cache_databases reads SqliteDict's default table directly."""
    from lm_eval_softreason.harness.preflight import CACHE_TABLE

    db = _sqlite_dict(tmp_path / "x.db", {"k": 1})
    with closing(sqlite3.connect(db)) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [(CACHE_TABLE,)]
