"""The documentation stays true: its generated parts are current, and every command it shows is valid.

Every ```bash block of README.md, docs/*.md and examples/**/README.md is checked without running anything heavy:
`make` targets and variables exist in the Makefile; `python -m MODULE` (and the console scripts of setup.py) exist
and take every flag shown (their --help, run in-process); fairseq commands parse with fairseq's own parsers and the
plugin (so every `--arch`, `--task`, `--criterion` and flag shown exists); shell scripts exist and parse. Every
```python block compiles; the plain-PyTorch one runs. A command of a new kind fails the test until it is taught here.
"""

import contextlib
import functools
import glob
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings

import pytest

import fairseq_define
from studies import docs
from tests.conftest import REPO_ROOT

DOC_FILES = sorted(
    [os.path.join(REPO_ROOT, "README.md")]
    + glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
    + glob.glob(os.path.join(REPO_ROOT, "examples", "**", "README.md"), recursive=True)
    + [os.path.join(REPO_ROOT, "studies", "README.md")]
)
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
FAIRSEQ_TOOLS = ("fairseq-train", "fairseq-eval-lm", "fairseq-generate", "fairseq-interactive", "fairseq-validate",
                 "fairseq-preprocess")


def _relative(path):
    return os.path.relpath(path, REPO_ROOT)


def blocks(language):
    """(file, block text) for every fenced block of `language` in the documentation."""
    found = []
    for path in DOC_FILES:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        found += [(_relative(path), m.group(2)) for m in BLOCK.finditer(text) if m.group(1) == language]
    return found


def shell_commands(block, evaluate=True):
    """The commands of a bash block as token lists, with variables (assigned in the block, or a for loop's first
    value) expanded and continuation lines joined; a command substitution runs only with `evaluate`."""
    env, commands = {"PWD": REPO_ROOT}, []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        loop = re.fullmatch(r"for (\w+) in (\S+).*; do", line)
        if loop:
            env[loop.group(1)] = loop.group(2)
            continue
        if not line or line.startswith("#") or re.match(r"done\b", line):
            continue
        assignment = re.fullmatch(r"(\w+)=(\S+)(\s+#.*)?", line) or re.fullmatch(r"(\w+)=(\$\(.*\))", line)
        if assignment:
            env[assignment.group(1)] = _evaluate(assignment.group(2)) if evaluate else assignment.group(2)
            continue

        def expand(match):
            name = match.group(1) or match.group(2)
            assert name in env, f"${name} is not set in its block"
            return env[name]

        tokens = shlex.split(re.sub(r"\$\{(\w+)\}|\$(\w+)", expand, line), comments=True)
        if tokens and tokens[-1] == "&":
            tokens = tokens[:-1]
        if tokens:
            commands.append(tokens)
    return commands


def _venv_bin():
    return os.path.dirname(sys.executable) + os.sep


def _evaluate(value):
    """A variable's value; a command substitution runs (with the test's interpreter for .venv/bin/)."""
    if not value.startswith("$("):
        return value
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    command = value[2:-1].replace(".venv/bin/", _venv_bin())
    return subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def all_commands():
    """(path, block, index) of every documented command, found without running anything (collection time)."""
    return [(path, block, i) for path, block in blocks("bash")
            for i, _ in enumerate(shell_commands(block, evaluate=False))]


def _ids(commands):
    return [f"{path}:{' '.join(shell_commands(block, evaluate=False)[i][:4])}" for path, block, i in commands]


COMMANDS = all_commands()


@functools.lru_cache(maxsize=None)
def makefile():
    with open(os.path.join(REPO_ROOT, "Makefile")) as f:
        text = f.read()
    targets = set(re.findall(r"^([\w.-]+):", text, re.M))
    variables = set(re.findall(r"^(\w+)\s*[?:]?=", text, re.M))
    return targets, variables


@functools.lru_cache(maxsize=None)
def console_scripts():
    with open(os.path.join(REPO_ROOT, "setup.py")) as f:
        return dict(re.findall(r'"([\w-]+) = ([\w.]+):\w+"', f.read()))


@functools.lru_cache(maxsize=None)
def module_help(module, *subcommand):
    """`python -m module [subcommand] --help`, run in-process (the imports are shared, so it is fast)."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [module, *subcommand, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
            runpy.run_module(module, run_name="__main__", alter_sys=False)
    except SystemExit:
        pass
    finally:
        sys.argv = argv
    return out.getvalue()


def _flags(args):
    return [a.split("=")[0] for a in args if a.startswith("--")]


def _has_flag(help_text, flag):
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def check_module(module, args):
    import importlib.util

    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    if module == "pytest":
        return
    if module == "fairseq_define.params":  # takes fairseq-train's model flags: build the model they describe
        from fairseq_define.params import build_model

        build_model([a for a in args if a not in ("--json", "--layers")], device="meta")
        return
    help_text = module_help(module)
    missing = [f for f in _flags(args) if not _has_flag(help_text, f)]
    if missing and args and not args[0].startswith("-"):  # a subcommand: python -m benchmarks glt --json ...
        help_text = module_help(module, args[0])
        missing = [f for f in _flags(args) if not _has_flag(help_text, f)]
    assert help_text, f"python -m {module} --help printed nothing"
    assert not missing, f"python -m {module} does not take {missing}"


def check_fairseq(tool, args, monkeypatch):
    from fairseq import options

    import fairseq_define.plugin  # noqa: F401

    monkeypatch.chdir(REPO_ROOT)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if tool == "fairseq-preprocess":
                options.get_preprocessing_parser().parse_args(args)
            else:
                parser = {"fairseq-train": options.get_training_parser,
                          "fairseq-eval-lm": options.get_eval_lm_parser,
                          "fairseq-generate": options.get_generation_parser,
                          "fairseq-interactive": options.get_interactive_generation_parser,
                          "fairseq-validate": options.get_validation_parser}[tool]()
                options.parse_args_and_arch(parser, input_args=args)
    except SystemExit:
        pytest.fail(f"{tool} {' '.join(args)}\n{stderr.getvalue()}")


def check_hydra(args):
    from fairseq.dataclass.configs import FairseqConfig

    config_dir = args[args.index("--config-dir") + 1]
    config_name = args[args.index("--config-name") + 1]
    assert os.path.isfile(os.path.join(REPO_ROOT, config_dir, config_name + ".yaml"))
    groups = set(FairseqConfig.__dataclass_fields__)
    for override in (a for a in args if "=" in a and not a.startswith("-")):
        assert override.split(".")[0] in groups, f"no config group for {override}"


@pytest.mark.parametrize("path,block,index", COMMANDS, ids=_ids(COMMANDS))
def test_documented_command_is_valid(path, block, index, monkeypatch):
    tokens = shell_commands(block)[index]
    program, args = tokens[0], tokens[1:]
    if program.startswith(".venv/bin/"):
        program = program[len(".venv/bin/"):]
    if program == "make":
        targets, variables = makefile()
        for arg in args:
            if "=" in arg:
                assert arg.split("=")[0] in variables, f"Makefile has no variable {arg}"
            else:
                assert arg in targets, f"Makefile has no target {arg}"
    elif program in ("python", "python3") and args[:1] == ["-m"]:
        check_module(args[1], args[2:])
    elif program in console_scripts():
        check_module(console_scripts()[program], args)
    elif program in FAIRSEQ_TOOLS:
        check_fairseq(program, args, monkeypatch)
    elif program == "fairseq-hydra-train":
        check_hydra(args)
    elif program == "bash":
        script = os.path.join(REPO_ROOT, args[0])
        assert os.path.isfile(script), f"no script {args[0]}"
        subprocess.run(["bash", "-n", script], check=True)
    elif program == "source":
        assert args == [".venv/bin/activate"], args
    elif program == "pip":
        assert args == ["install", "-e", "."] and os.path.isfile(os.path.join(REPO_ROOT, "setup.py"))
    else:
        pytest.fail(f"{path}: a command this test does not know how to check: {' '.join(tokens)}")


def test_every_kind_of_command_is_found():
    programs = {shell_commands(block, evaluate=False)[i][0].replace(".venv/bin/", "") for _, block, i in COMMANDS}
    assert {"make", "fairseq-train", "fairseq-eval-lm", "python", "bash"} <= programs


@pytest.mark.parametrize("path,code", blocks("python"), ids=[p for p, _ in blocks("python")])
def test_documented_python_compiles(path, code):
    compile(code, path, "exec")


def test_plain_pytorch_example_runs():
    code = next(code for path, code in blocks("python") if path == "README.md" and "DefineConfig(" in code)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert tuple(namespace["x"].shape) == (8, 64, 512)


def test_generated_blocks_are_current():
    stale = [_relative(path) for path, (current, generated) in docs.updated_files().items() if current != generated]
    assert not stale, f"{stale} out of date: run `python -m studies docs`"


def test_every_results_entry_names_finished_rows_of_its_study():
    """The results tables skip a pair whose rows have not run; every committed entry must have run (no typo hides)."""
    for model, study, control, define, recipe, _ in docs.RESULTS:
        assert recipe in (docs.PAPER, docs.RECOMMENDED)
        table = docs._study(study)
        assert docs._row(table, control) is not None and docs._row(table, define) is not None, (model, study)
    readme = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
    results = open(os.path.join(REPO_ROOT, "docs", "results.md"), encoding="utf-8").read()
    for _, _, _, define, recipe, _ in docs.RESULTS:
        assert f"`{define}`" in results and (recipe != docs.RECOMMENDED or f"`{define}`" in readme)


def test_every_define_flag_is_documented():
    with open(os.path.join(REPO_ROOT, "docs", "models.md"), encoding="utf-8") as f:
        text = f.read()
    import dataclasses

    from fairseq_define.modules import DefineConfig

    for field in dataclasses.fields(DefineConfig):
        assert f"`{DefineConfig.flag(field.name)}`" in text


def test_links_between_documents_resolve():
    for path in DOC_FILES:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"\w+:", target):
                continue
            assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{_relative(path)}: {target}"


def test_readme_is_short_and_metadata_agrees():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert len(readme.splitlines()) <= 150
    with open(os.path.join(REPO_ROOT, "setup.py")) as f:
        setup = f.read()
    assert 'python_requires=">=3.11"' in setup and "Python 3.11" in readme
    with open(os.path.join(REPO_ROOT, "CITATION.cff")) as f:
        assert f"version: {fairseq_define.__version__}\n" in f.read()
    assert os.path.isfile(os.path.join(REPO_ROOT, "LICENSE"))

pytestmark = pytest.mark.slow
