import contextlib
import os

import pytest
import torch
from hypothesis import settings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("FAIRSEQ_DEFINE_DATA", os.path.join(REPO_ROOT, "..", "shared", "data"))

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: one pytest worker per core, one thread per worker
    os.environ["OMP_NUM_THREADS"] = "1"  # (and per fairseq command the tests start as a subprocess)
    torch.set_num_threads(1)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Property tests draw the same examples on every run (derandomize: a seed from each test's own code), with no time
# limit per example (a loaded machine is no failure) and no example database replaying another run's draws.
# HYPOTHESIS_PROFILE=explore draws new random examples each run, to look for counterexamples on purpose.
settings.register_profile("repeatable", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def data_dir(name):
    """The real data set `name` under ../shared/data. Skipped where it is missing, except under CI=true, where a
    missing data set fails the test: CI must not pass by skipping every real-data test."""
    path = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(path):
        message = f"real data not found at {path} (set FAIRSEQ_DEFINE_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return path



@contextlib.contextmanager
def examples_in_process():
    """The examples' `run` runs their fairseq commands in this process (`tests.cli.run_in_process`): their commands
    are unchanged, without an interpreter start-up and fairseq import per command. (The studies take a `runner`.)"""
    import examples.common
    import examples.translation.pipeline
    from tests.cli import run_in_process

    with pytest.MonkeyPatch.context() as patch:
        for module in (examples.common, examples.translation.pipeline):
            patch.setattr(module, "run", run_in_process)
        yield


@pytest.fixture(scope="module")
def multi30k_slice(tmp_path_factory):
    source = data_dir("multi30k")  # the slice of the Multi30k study tests
    dest = tmp_path_factory.mktemp("m30k-raw")
    for name, count in (("train", 1000), ("val", 100), ("test_2016_flickr", 100)):
        for lang in ("en", "de"):
            with open(os.path.join(source, f"{name}.{lang}"), encoding="utf-8") as f:
                lines = [next(f) for _ in range(count)]
            (dest / f"{name}.{lang}").write_text("".join(lines), encoding="utf-8")
    return str(dest)
