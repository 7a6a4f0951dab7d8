"""studies/language_models.py: the WikiText-2 studies' rows (seed, -4x and recommended rows derived from the others,
diagnosis rows that change one thing, parameter counts at the real sizes), and the tiny Transformer-XL and AWD-LSTM
studies end to end on a WikiText-2 slice (two rows, then a finished row and a diagnosis row), their fairseq commands
run in this process by `tests.cli.run_in_process`."""

import contextlib
import io
import os
import re
from types import SimpleNamespace

import pytest
import torch

from examples.common import perplexity
from studies import language_models as lm
from studies.runner import TABLE_FIELDS, run_study, table_entry
from studies.store import Store, log_records
from studies.units import NO_UNIT, RECOMMENDED
from tests import cli
from tests.conftest import data_dir

WIKITEXT2_VOCAB = 33_280  # fairseq's dictionary of WikiText-2's training set: 33,276 types + 4 specials
STUDIES = {"lm_wikitext2": lm.lm_wikitext2, "lm_wikitext2_diagnosis": lm.lm_wikitext2_diagnosis,
           "txl_wikitext2": lm.txl_wikitext2, "txl_wikitext2-tiny": lambda: lm.txl_wikitext2(tiny=True),
           "lstm_wikitext2": lm.lstm_wikitext2, "lstm_wikitext2-tiny": lambda: lm.lstm_wikitext2(tiny=True)}
# the rows run again with another seed and those run 4x longer
SEEDED = {"lm_wikitext2": {"map-128", "recommended-128"},
          "lstm_wikitext2": {"adaptive-256", "adaptive-256-recommended"},
          "lstm_wikitext2-tiny": {"adaptive-32", "adaptive-32-recommended"}}
STRETCHED = {"lm_wikitext2": {"map-256", "recommended-256"}, "txl_wikitext2": {"map-64", "recommended-64"},
             "txl_wikitext2-tiny": {"map-64", "recommended-64"},
             "lstm_wikitext2": {"adaptive-256", "adaptive-256-recommended"},
             "lstm_wikitext2-tiny": {"adaptive-32", "adaptive-32-recommended"}}
# what a diagnosis row's name says it adds to the row it is named after (a later flag wins over an earlier one)
STEPS = {"-lr1e-3": ["--lr", "0.001"], "-lr1e-2": ["--lr", "0.01"],
         **{f"-unit-lr{s}": ["--define-unit-lr-scale", s] for s in ("1", "0.3", "0.1")},
         "-fan-in": ["--define-unit-lr-scale", "fan-in"], "-residual": ["--define-residual"],
         "-host-scale": ["--define-host-scale"], "-no-dropout": lm.LSTM_NO_DROPOUT,
         "-reduce-skip": ["--define-reduce-skip"], "-map-dropout": ["--define-map-dropout", "0.1"],
         "-depth7": ["--define-depth", "7"], "-scale-weights": ["--define-output-scale", "weights"],
         "-paper-linear": ["--define-norm", "none", "--define-activation", "none"]}
HOST_FLAGS = ("--define-map-dim", "--define-input-dim")  # the Map's shape: every other --define-* flag is the unit's


def value(flags, name):
    return flags[len(flags) - 1 - flags[::-1].index(name) + 1]  # the last one: the one fairseq uses


def host(flags):
    """A row's flags before its unit's (the context model, the Map's shape, the softmax)."""
    return flags[:next(i for i, f in enumerate(flags) if f.startswith("--define-") and f not in HOST_FLAGS)]


@pytest.mark.parametrize("key", [k for k in STUDIES if k != "lm_wikitext2_diagnosis"])
def test_seed_and_longer_rows_add_one_flag_to_their_row(key):
    study = STUDIES[key]()
    seeded, stretched = set(), set()
    for name, flags in study.every_row.items():
        if re.search(r"-seed\d+$", name):
            base, seed = name.rsplit("-seed", 1)
            assert flags == [*study.rows[base], "--seed", seed], name  # after the recipe's --seed 1
            seeded.add(base)
        elif name.endswith("-4x"):
            base = name[:-len("-4x")]
            assert flags == [*study.rows[base], "--max-update", str(4 * study.max_update)], name
            assert value([*study.train, *study.budget(), *flags], "--max-update") == str(4 * study.max_update)
            stretched.add(base)
    assert seeded == SEEDED.get(key, set()) and stretched == STRETCHED.get(key, set())
    assert {f"{name}-seed{s}" for name in seeded for s in (2, 3)} <= set(study.rows)


@pytest.mark.parametrize("key", [k for k in STUDIES if k != "lm_wikitext2_diagnosis"])
def test_recommended_rows_name_the_preset_in_place_of_the_unit_it_replaced(key):
    study = STUDIES[key]()
    recommended = [n for n in study.rows if "recommended" in n and not re.search(r"-seed\d+$|-4x$", n)]
    assert len(recommended) >= 2
    for name in recommended:
        flags = study.rows[name]
        assert flags == [*host(flags), *RECOMMENDED], name  # the preset alone: no other unit flag
        twin = study.rows.get(name.replace("recommended", "authors") + "-fan-in")  # the same unit, before presets
        if twin is None:  # a width only the preset ran at: the same model as its control but for the unit
            twin = study.rows[name.replace("recommended", "map")]
        assert host(twin) == host(flags), name


@pytest.mark.parametrize("key", ["lm_wikitext2_diagnosis", "txl_wikitext2", "txl_wikitext2-tiny", "lstm_wikitext2",
                                 "lstm_wikitext2-tiny"])
def test_diagnosis_rows_change_one_thing(key):
    study = STUDIES[key]()
    rows = study.every_row
    assert study.diagnosis and set(study.diagnosis).isdisjoint(study.rows)
    for name, flags in study.diagnosis.items():
        if re.fullmatch(r"(map|define|linear|authors)-\d+", name):  # a unit on the Map of map-N, nothing else
            control = rows[re.sub(r"^\w+-", "map-", name)]
            assert control[-len(NO_UNIT):] == NO_UNIT and host(flags) == host(control), name
            assert (flags == control) == name.startswith("map-"), name
            continue
        # the row named without one step, plus that step's flags
        bases = [(name.replace(step, "", 1), extra) for step, extra in STEPS.items() if step in name]
        assert any(rows.get(base) is not None and flags == [*rows[base], *extra] for base, extra in bases), name


def counts(study, names, vocab=WIKITEXT2_VOCAB):
    """Parameters per part of each row's model at the real sizes (on the meta device: no memory, no init)."""
    from fairseq_define.params import build_model, count_parts

    return {name: dict(count_parts(build_model(["--vocab-size", str(vocab), *study.rows[name]], device="meta")[0]))
            for name in names}


def test_lstm_real_sizes_table_1c_saving_and_table_1a_pair():
    study = lm.lstm_wikitext2()
    assert list(study.rows)[:8] == ["baseline", "define-128", "adaptive-256", "adaptive-256-define",
                                    "authors-128-fan-in", "adaptive-256-authors-fan-in", "recommended-128",
                                    "adaptive-256-recommended"]
    parts = counts(study, list(study.rows)[:8])
    base, define = parts["baseline"], parts["define-128"]
    assert base["context"] == define["context"] == parts["adaptive-256"]["context"] == 4_466_688  # one context
    assert base["define"] == 0 and base["map"] == WIKITEXT2_VOCAB * 256
    assert define["map"] == WIKITEXT2_VOCAB * 128 and define["define"] == 1_940_608
    assert base["total"] == 13_019_648 and define["total"] == 10_733_184
    assert define["total"] <= 0.85 * base["total"]  # the Table 1c shape: >= 15 % fewer parameters
    adaptive, adaptive_define = parts["adaptive-256"], parts["adaptive-256-define"]
    assert adaptive["define"] == 0 and adaptive_define["define"] == 437_120  # Table 1a's N = 3 unit
    # bands 5000 x 256, 15000 x 64, 13280 x 16, tail projections (64 + 16) x 256, 2 cluster logits x 256
    assert adaptive["map"] + adaptive["output"] == 2_473_472 and adaptive["total"] == 6_940_160
    assert adaptive_define["total"] == 6_940_160 + 437_120
    # the authors' unit (k = 1024, N = 3, g_max = 32) in both shapes, every other part the same
    authors, adaptive_authors = parts["authors-128-fan-in"], parts["adaptive-256-authors-fan-in"]
    assert {k: v for k, v in authors.items() if k not in ("define", "total")} == \
        {k: v for k, v in define.items() if k not in ("define", "total")}
    assert authors["define"] == 793_312 and authors["total"] <= 0.75 * base["total"]
    assert adaptive_authors["define"] == 809_696 and adaptive_authors["total"] == 6_940_160 + 809_696
    # the recommended preset is that unit's shape: the same parameters
    assert parts["recommended-128"] == authors and parts["adaptive-256-recommended"] == adaptive_authors


def test_txl_real_sizes_table_2_pairs_at_the_same_d():
    study = lm.txl_wikitext2()
    names = [n for n in study.rows if not n.endswith("-4x")]
    assert names == ["map-256", "define-256", "map-64", "define-64", "authors-256-fan-in", "authors-64-fan-in",
                     "recommended-256", "recommended-64", "map-128", "recommended-128", "map-512", "recommended-512"]
    context = host(study.rows["map-256"])[:study.rows["map-256"].index("--define-map-dim")]
    for name in names:
        flags = study.rows[name]
        assert flags[:len(context)] == context  # one context model
        assert value(flags, "--define-map-dim") == re.search(r"-(\d+)", name).group(1)
        assert value(flags, "--define-input-dim") == value(flags, "--decoder-embed-dim") == "256"  # n -> d = m
        if not name.startswith("recommended"):
            assert value(flags, "--define-transform") == name.split("-")[0].replace("map", "none")
    for tiny in (False, True):
        train = lm.txl_wikitext2(tiny).train
        assert value(train, "--task") == "bptt_lm" and value(train, "--criterion") == "define_bptt_nll"
    parts = counts(study, names)
    for n in (256, 64):  # the pairs differ by the unit only
        plain = parts[f"map-{n}"]
        # a V x n lookup Map (projected to 256 where n < 256), no unit
        assert plain["define"] == 0 and plain["map"] == WIKITEXT2_VOCAB * n + (n * 256 if n != 256 else 0)
        for unit in ("define-{}", "authors-{}-fan-in", "recommended-{}"):
            row = parts[unit.format(n)]
            assert {k: v for k, v in row.items() if k not in ("define", "total")} == \
                {k: v for k, v in plain.items() if k not in ("define", "total")}
            assert row["define"] > 0 and row["total"] - plain["total"] == row["define"]
        assert parts[f"define-{n}"]["define"] == 437_120  # the paper's light unit, k = 1024, N = 3
        assert parts[f"recommended-{n}"] == parts[f"authors-{n}-fan-in"]


# ---- the tiny studies end to end ------------------------------------------------------------------------------
TXL_RUN, TXL_AGAIN = ["map-64", "recommended-64"], ["map-64", "define-256-unit-lr0.3"]
LSTM_RUN, LSTM_AGAIN = ["adaptive-32", "adaptive-32-recommended"], ["adaptive-32", "authors-16-fan-in-host-scale"]
TINY_TXL_BPTT = 32


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    """The first lines of WikiText-2, binarized (train: enough types for the tiny LSTM's cutoffs 500,2000)."""
    return cli.wikitext_slice(data_dir("wikitext-2"), str(tmp_path_factory.mktemp("wt2")), lines=(1000, 60, 60))


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, above all on shared cores
    yield
    torch.set_num_threads(threads)


class Recorder:
    """`run_in_process`, remembering every command."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, log=None):
        self.commands.append([str(c) for c in command])
        return cli.run_in_process(command, log=log, echo=False)

    def tools(self, tool):
        return [c for c in self.commands if c[2] == f"fairseq_cli.{tool}"]


def run_tiny(study, first, again, data, root):
    """Rows `first` of `study` trained 8 updates and scored, then rows `again` (a finished row and a diagnosis
    row)."""
    store, workdir = Store(str(root / "results")), str(root / "runs")
    runners, printed = (Recorder(), Recorder()), io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = run_study(study, first, data, workdir, store, runner=runners[0], max_update=8)
        rerun = run_study(study, again, data, workdir, store, runner=runners[1], max_update=8)
    with open(os.path.join(data, "dict.txt"), encoding="utf-8") as f:
        vocab = len(f.readlines()) + 4
    return SimpleNamespace(study=study, names=(first, again), store=store, results=results, rerun=rerun,
                           first=runners[0], again=runners[1], printed=printed.getvalue(), data=data, vocab=vocab,
                           workdir=os.path.join(workdir, study.name))


@pytest.fixture(scope="module")
def txl_run(wikitext, one_thread, tmp_path_factory):
    return run_tiny(lm.txl_wikitext2(tiny=True), TXL_RUN, TXL_AGAIN, wikitext, tmp_path_factory.mktemp("txl"))


@pytest.fixture(scope="module")
def lstm_run(wikitext, one_thread, tmp_path_factory):
    return run_tiny(lm.lstm_wikitext2(tiny=True), LSTM_RUN, LSTM_AGAIN, wikitext, tmp_path_factory.mktemp("lstm"))


def unit(name):
    return next((unit for unit in ("recommended", "define", "authors") if unit in name), "none")


def check_rows(run, eval_args):
    """What every study run writes: result.json, the kept eval outputs, fairseq's json train log, the checkpoint,
    the table; and what the second run did: skip the finished row, score the diagnosis row on valid only."""
    study, store, (first, second), diagnosis = run.study, run.store, run.results[:2], run.rerun[1]
    assert [[r["name"] for r in results] for results in (run.results, run.rerun)] == list(run.names)
    for result in (*run.results, diagnosis):
        name = result["name"]
        assert result == store.result(study.name, name)
        flags = study.every_row[name]
        assert result["flags"] == flags and result["train_args"] == [*study.train, "--max-update", "8"]
        assert result["n"] == int(value(flags, "--define-map-dim")) and result["updates"] == 8
        assert result["transform"] == unit(name)
        assert (result["define_params"] > 0) == (result["transform"] != "none")
        assert result["parts"]["define"] == result["define_params"] and result["parts"]["total"] == result["params"]
        assert result["train_wall_s"] >= 0 and result["epochs"] == 1
        assert os.path.isfile(os.path.join(run.workdir, name, "checkpoint_last.pt"))
        log = store.log(study.name, name)  # fairseq's json log, task bptt_lm
        assert re.search(r"\| INFO \| train \| \{", log) and "bptt_lm" in log
        assert [r["num_updates"] for r in log_records(log, "train")] == [8]
        subsets = ("valid",) if name in study.diagnosis else ("valid", "test")
        assert result["scored_on"] == subsets[-1]
        for subset in ("valid", "test"):  # the perplexity recorded is the one the kept eval-lm output prints
            path = store.path(study.name, name, f"eval-{subset}.txt")
            if subset in subsets:
                with open(path, encoding="utf-8") as f:
                    assert perplexity(f.read()) == result[f"{subset}_ppl"]
                assert 1 < result[f"{subset}_ppl"] < 2 * run.vocab
            else:
                assert result[f"{subset}_ppl"] is None and not os.path.exists(path)
    assert second["params"] - first["params"] == second["define_params"]  # the pair differs by the unit only
    # every eval-lm ran on the last checkpoint with the study's arguments after the defaults (they win)
    evals = run.first.tools("eval_lm") + run.again.tools("eval_lm")
    assert len(evals) == 2 * 2 + 1
    for command in evals:
        start = command.index("--cpu") + 1
        assert command[start:start + len(eval_args)] == eval_args
        assert os.path.basename(value(command, "--path")) == "checkpoint_last.pt"
    # the second run trained the diagnosis row only and skipped the finished one
    assert run.rerun[0] == first and "done already" in run.printed
    assert len(run.first.tools("train")) == 2 and len(run.again.tools("train")) == 1
    assert value(run.again.tools("train")[0], "--log-format") == "json"
    table = store.table(study.name)["rows"]
    assert table == [table_entry(r) for r in (first, second, diagnosis)]
    assert all(set(row) == set(TABLE_FIELDS) for row in table)


@pytest.mark.slow
def test_tiny_txl_study_trains_scores_with_memory_and_writes_its_files(txl_run):
    check_rows(txl_run, lm.txl_eval(TINY_TXL_BPTT))
    assert all(r["d"] == 64 for r in (*txl_run.results, *txl_run.rerun))  # define_transformer_xl_tiny's width
    diagnosis = txl_run.rerun[1]  # define-256 + the unit's 0.3x step
    assert diagnosis["flags"] == [*txl_run.study.rows["define-256"], "--define-unit-lr-scale", "0.3"]
    # eval-lm with memory: segments of bptt / 2, memory 4 x bptt, distances clamped at 2.5 x bptt
    command = txl_run.first.tools("eval_lm")[0]
    assert value(command, "--task") == "bptt_lm" and value(command, "--tokens-per-sample") == "16"
    assert value(command, "--model-overrides") == "{'mem_len': 128, 'clamp_len': 80, 'same_length': True}"
    # ... and the memory is what the recorded perplexity used: without it eval-lm gives another number
    args = lm.txl_eval(TINY_TXL_BPTT)
    no_memory = [*args[:args.index("--model-overrides")], "--model-overrides", "{'mem_len': 0}"]
    checkpoint = os.path.join(txl_run.workdir, "recommended-64", "checkpoint_last.pt")
    out = cli.call("eval_lm", txl_run.data, "--path", checkpoint, "--gen-subset", "valid", "--cpu", *no_memory)
    assert perplexity(out) != txl_run.results[1]["valid_ppl"]


@pytest.mark.slow
def test_tiny_lstm_study_trains_scores_and_writes_its_files(lstm_run):
    check_rows(lstm_run, lm.LSTM_EVAL)
    first, second = lstm_run.results
    assert (first["n"], second["n"], second["transform"]) == (32, 32, "recommended")
    diagnosis = lstm_run.rerun[1]  # authors-16-fan-in + the host's scale, a full softmax
    assert diagnosis["flags"] == [*lstm_run.study.rows["authors-16-fan-in"], "--define-host-scale"]
    assert value(diagnosis["flags"], "--criterion") == "ar_tar_cross_entropy" and diagnosis["n"] == 16
