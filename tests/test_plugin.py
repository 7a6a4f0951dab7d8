"""--user-dir mechanics: fairseq imports the plugin by path, from the repository root and from the installed package."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

LOAD = (
    "import argparse, sys; from fairseq import utils; "
    "utils.import_user_module(argparse.Namespace(user_dir=sys.argv[1])); "
    "import fairseq_define, numpy; print(fairseq_define.__file__); print(hasattr(numpy, 'compat'))"
)


def load_plugin(user_dir, cwd):
    out = subprocess.run([sys.executable, "-c", LOAD, user_dir], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_user_dir_from_repository_root():
    path, shimmed = load_plugin("fairseq_define", REPO_ROOT)
    assert os.path.dirname(path) == os.path.join(REPO_ROOT, "fairseq_define") and shimmed == "True"


def test_user_dir_as_installed_package_path_from_anywhere(tmp_path):
    import fairseq_define

    package_dir = os.path.dirname(fairseq_define.__file__)
    path, _ = load_plugin(package_dir, str(tmp_path))
    assert os.path.dirname(path) == package_dir
