"""--user-dir mechanics: fairseq imports the plugin by path, from the repository root and from the installed package."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # each test starts a Python process that loads fairseq

LOAD = (
    "import argparse, sys; from fairseq import utils; "
    "utils.import_user_module(argparse.Namespace(user_dir=sys.argv[1])); "
    "import fairseq_define, numpy; print(fairseq_define.__file__); print(hasattr(numpy, 'compat'))"
)


def load_plugin(user_dir, cwd):
    out = subprocess.run([sys.executable, "-c", LOAD, user_dir], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


REGISTRIES = (
    "from fairseq.models import ARCH_MODEL_REGISTRY as A; from fairseq.tasks import TASK_REGISTRY as T; "
    "from fairseq.criterions import CRITERION_REGISTRY as C; from fairseq.optim import OPTIMIZER_REGISTRY as O; "
    "from fairseq.optim.lr_scheduler import LR_SCHEDULER_REGISTRY as S; "
    "print(all(a in A for a in ['define_transformer_lm', 'define_transformer', 'define_transformer_xl_tiny', "
    "'define_awd_lstm_tiny']), 'bptt_lm' in T, all(c in C for c in ['define_bptt_nll', 'ar_tar_cross_entropy']), "
    "'nt_asgd' in O, 'nt_asgd_trigger' in S)"
)


@pytest.fixture(scope="module")
def loaded_from_root():
    """One fresh process loads --user-dir fairseq_define from the repository root: (plugin file, numpy shimmed,
    5 registry checks)."""
    out = subprocess.run([sys.executable, "-c", LOAD + "; " + REGISTRIES, "fairseq_define"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    return words[0], words[1], words[2:]


def test_user_dir_from_repository_root(loaded_from_root):
    path, shimmed, _ = loaded_from_root
    assert os.path.dirname(path) == os.path.join(REPO_ROOT, "fairseq_define") and shimmed == "True"


def test_user_dir_as_installed_package_path_from_anywhere(tmp_path):
    import fairseq_define

    package_dir = os.path.dirname(fairseq_define.__file__)
    path, _ = load_plugin(package_dir, str(tmp_path))
    assert os.path.dirname(path) == package_dir


def test_user_dir_registers_everything_the_plugin_adds(loaded_from_root):
    assert loaded_from_root[2] == ["True"] * 5


def test_one_version_and_the_accounting_entry_point():
    from importlib.metadata import version

    import fairseq_define

    assert version("fairseq_define") == fairseq_define.__version__
    tool = os.path.join(os.path.dirname(sys.executable), "fairseq-define-params")
    out = subprocess.run([tool, "--arch", "define_transformer_lm_gpt2_tiny", "--define-preset", "paper",
                          "--vocab-size", "300", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"define": 16440' in out.stdout.strip().splitlines()[-1]
