"""`make gpu-check`: what only a CUDA machine can measure, in one run of at most --budget seconds (8 minutes).

    python -m benchmarks.gpu_check --data ../shared/data/wikitext-2 --json docs/results/benchmarks/gpu_check.json

Without CUDA it prints one line and exits 0. With CUDA, in this order (each section records its seconds, and its
error instead of stopping the others; a section that no longer fits the budget is skipped, and the JSON is
rewritten after every section, so a killed run keeps what it measured):
- cuda_tests: pytest on the tests that skip without CUDA (those marked `requires_cuda`, tests/conftest.py);
- glt: `benchmarks glt` in float32, bfloat16 and float16 (GroupLinear against dense cuBLAS over the same features);
- lm_bf16: `benchmarks lm` on CUDA with the models in bfloat16 (fairseq's --bf16): map-n, define-n,
  recommended-n, default-n (n = 256, 64), each against map-n;
- forward_checks: per model of lm_bf16 (fp32 weights, train mode, a real batch): the host synchronisations of one
  forward that torch.profiler sees (cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize calls and
  device-to-host copies), those that torch.cuda.set_sync_debug_mode reports (by source line), and whether a
  training step runs under fp16 / bf16 autocast (fairseq-train --amp's mixed precision);
- train: a 300-update fairseq-train of the recommended LM (the lm_wikitext2 study's recommended-256 row: its
  context flags and `--define-preset recommended`, its training recipe on CUDA), its valid losses and wall time.
"""

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_CUDA = "gpu-check: no CUDA device (torch.cuda.is_available() is False); nothing to check, nothing written"
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
TRAIN_ROW = "recommended-256"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/wikitext-2",
                        help="folder with wiki.{train,valid,test}.tokens (or binarized, with dict.txt)")
    parser.add_argument("--cache", default="bench-results/wikitext-2-bin", help="where the binarized data is kept")
    parser.add_argument("--json", default="docs/results/benchmarks/gpu_check.json", metavar="PATH")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check")
    parser.add_argument("--max-update", type=int, default=300, help="updates of the training run")
    parser.add_argument("--dry-run-on-cpu", action="store_true",
                        help="for testing this script: every section on the CPU at tiny sizes")
    return parser.parse_args(argv)


# pytest plugin (-p benchmarks.gpu_check): keep only the tests that need CUDA ---------------------------------

def pytest_collection_modifyitems(config, items):
    """Deselect every collected test that is not marked `requires_cuda`."""
    from tests.conftest import requires_cuda

    reason = requires_cuda.mark.kwargs["reason"]
    keep = [item for item in items if any(m.kwargs.get("reason") == reason for m in item.iter_markers("skipif"))]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def cuda_test_files():
    """The test files that use `requires_cuda`."""
    files = []
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "**", "test_*.py"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            if "requires_cuda" in f.read():
                files.append(os.path.relpath(path, REPO))
    return files


def cuda_tests(timeout):
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "benchmarks.gpu_check", "-p", "no:cacheprovider",
               *cuda_test_files()]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    summary = (out.stdout.strip().splitlines() or [""])[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)",
                                                       summary)}
    return {"ok": out.returncode == 0, "returncode": out.returncode, "command": " ".join(command[1:]),
            "summary": summary, "counts": counts, "output_tail": out.stdout[-3000:] if out.returncode else ""}


# GLT and the LM step --------------------------------------------------------------------------------------------

def glt(device, tiny):
    from benchmarks import glt as bench

    sizes = dict(features=64, tokens=[32], groups=[1, 4], rounds=1) if tiny else dict(
        features=1024, tokens=[2048, 8192], groups=[1, 2, 4, 8, 16], rounds=5)
    rows = {}
    for dtype in ("float32", "bfloat16", "float16"):
        try:
            rows[dtype] = bench.run(argparse.Namespace(**sizes), device, getattr(torch, dtype))["rows"]
        except RuntimeError as error:  # one dtype's failure is a result, not the end of the check
            rows[dtype] = {"error": f"{type(error).__name__}: {error}"[:500]}
    return rows


def lm_sizes(args, data):
    tiny = dict(max_tokens=256, batches=1, steps=1, rounds=1, map_dims=[64])
    full = dict(max_tokens=2048, batches=8, steps=3, rounds=7, map_dims=[256, 64])
    return argparse.Namespace(data=data, cache=data, kinds=["define", "recommended", "default"],
                              **(tiny if args.dry_run_on_cpu else full))


def lm_mixed(args, data, device):
    """`benchmarks lm` with the models in bfloat16 (as fairseq's --bf16 runs them)."""
    from benchmarks import lm

    result = lm.run(lm_sizes(args, data), device, torch.bfloat16)
    return {"ms_per_step": result["ms_per_step"], "ratios": result["ratios"], "params": result["meta"]["params"]}


def count_syncs(profiler_events):
    """{call: count} of the synchronising CUDA runtime calls, and the device-to-host copies, in profiler events."""
    counts = collections.Counter()
    for event in profiler_events:
        if event.name in SYNC_CALLS:
            counts[event.name] += 1
        elif "memcpy dtoh" in event.name.lower():
            counts["memcpy_dtoh"] += 1
    return dict(counts)


def sync_debug(forward, device):
    """{count, sources}: the synchronising calls that torch.cuda.set_sync_debug_mode("warn") reports in
    `forward()`, by the file and line that made them."""
    if device.type != "cuda":
        forward()
        return {"count": 0, "sources": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            forward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    sources = collections.Counter(f"{os.path.relpath(w.filename, REPO)}:{w.lineno}" for w in syncs)
    return {"count": len(syncs), "sources": dict(sources.most_common())}


def autocast_step(model, criterion, sample, device, dtype):
    """"ok", or the error of one training step (forward, adaptive loss, backward) under autocast to `dtype`
    (fairseq-train --amp's way)."""
    try:
        with torch.autocast(device.type, dtype=dtype):
            loss, _, _ = criterion(model, sample)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return "ok"
    except RuntimeError as error:
        return f"{type(error).__name__}: {error}"[:500]


def forward_checks(args, data, device):
    """Per model of `lm_mixed` (fp32 weights, train mode, one real batch): the host synchronisations of one forward
    (torch.profiler and the sync debug mode), and whether a training step runs under fp16 / bf16 autocast."""
    from fairseq.criterions.adaptive_loss import AdaptiveLoss
    from torch.profiler import ProfilerActivity, profile

    from benchmarks import lm

    sizes = lm_sizes(args, data)
    models, task = lm.load_models(data, lm.row_names(sizes.map_dims, sizes.kinds), device, torch.float32)
    sample = lm.batches_of(task, "train", sizes.max_tokens, 1, device)[0]
    criterion = AdaptiveLoss(task, sentence_avg=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    results = {}
    for name, model in models.items():
        model.train()

        def forward():
            model(**sample["net_input"])
        forward()  # warm-up
        with profile(activities=activities) as profiler:
            forward()
        results[name] = {"syncs_per_forward": count_syncs(profiler.events()),
                         "sync_debug_per_forward": sync_debug(forward, device),
                         "autocast_step": {str(dtype).replace("torch.", ""): autocast_step(
                             model, criterion, sample, device, dtype) for dtype in (torch.float16, torch.bfloat16)}}
    return results


# the training run -------------------------------------------------------------------------------------------

def train_command(data_bin, save_dir, max_update, on_cpu=False):
    """fairseq-train of the lm_wikitext2 study's recommended-256 row with its recipe, on CUDA, `max_update`
    updates, no checkpoints."""
    from examples.common import fairseq
    from studies.language_models import LM_ROWS, LM_TRAIN

    recipe = [f for f in LM_TRAIN if on_cpu or f != "--cpu"]
    return fairseq("train", data_bin, *LM_ROWS[TRAIN_ROW], *recipe, "--max-update", max_update,
                   "--save-dir", save_dir, "--no-save")


def train(args, data_bin, timeout):
    with tempfile.TemporaryDirectory() as save_dir:
        updates = 2 if args.dry_run_on_cpu else args.max_update
        command = train_command(data_bin, save_dir, updates, on_cpu=args.dry_run_on_cpu)
        start = time.perf_counter()
        try:
            out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                                 env=dict(os.environ, PYTHONWARNINGS="ignore"))
            log, returncode = out.stdout + out.stderr, out.returncode
        except subprocess.TimeoutExpired as stopped:  # keep what it logged before the budget ran out
            log = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                          for part in (stopped.stdout, stopped.stderr))
            returncode = f"stopped after {timeout:.0f} s (the budget)"
    from studies.store import log_records, train_wall_seconds

    valid = [{"loss": r["loss"], "ppl": r["ppl"]} for r in log_records(log, "valid")]
    done = [r["num_updates"] for kind in ("valid", "train") for r in log_records(log, kind) if "num_updates" in r]

    return {"ok": returncode == 0, "returncode": returncode, "row": TRAIN_ROW,
            "command": " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in command[1:]),
            "seconds": time.perf_counter() - start, "train_wall": train_wall_seconds(log),
            "num_updates": int(max(done)) if done else 0, "valid": valid,
            "log_tail": log[-3000:] if returncode else ""}


# the check --------------------------------------------------------------------------------------------------

def environment(device):
    from benchmarks.timing import meta

    info = meta(device, torch.float32, 0)
    info.pop("rounds")
    info.pop("dtype")
    info["cuda"] = torch.version.cuda
    return info


def main(argv=None):
    args = parse_args(argv)
    if not (torch.cuda.is_available() or args.dry_run_on_cpu):
        print(NO_CUDA)
        return 0
    start = time.perf_counter()
    device = torch.device("cpu" if args.dry_run_on_cpu else "cuda")
    result = {"meta": dict(environment(device), budget_s=args.budget, dry_run_on_cpu=args.dry_run_on_cpu)}

    def left():
        return args.budget - (time.perf_counter() - start)

    def section(name, needs, work):
        """Run `work()` into result[name] if `needs` seconds are left; record its seconds or its error."""
        if left() < needs:
            result[name] = {"skipped": f"{left():.0f} s left of the budget, {needs} s needed"}
        else:
            began = time.perf_counter()
            try:
                result[name] = {"result": work()}
            except (Exception, SystemExit) as error:  # recorded; the other sections still run
                result[name] = {"error": f"{type(error).__name__}: {error}"[-3000:]}
            result[name]["seconds"] = round(time.perf_counter() - began, 1)
        print(f"gpu-check: {name}: {', '.join(k for k in result[name] if k != 'seconds')} "
              f"({result[name].get('seconds', 0)} s, {left():.0f} s left)", flush=True)
        save(args.json, result, start)

    section("cuda_tests", 30, lambda: cuda_tests(timeout=max(30.0, min(150.0, left() - 300))))
    section("glt", 30, lambda: glt(device, args.dry_run_on_cpu))
    data = {}
    section("data", 60, lambda: data.setdefault("bin", prepare(args)))
    if "bin" in data:
        section("lm_bf16", 60, lambda: lm_mixed(args, data["bin"], device))
        section("forward_checks", 45, lambda: forward_checks(args, data["bin"], device))
        section("train", 60, lambda: train(args, data["bin"], timeout=left() - 10))
    save(args.json, result, start)
    print(f"gpu-check: wrote {args.json} ({time.perf_counter() - start:.0f} s)")
    return 0


def prepare(args):
    from examples.common import preprocess_wikitext

    data = os.path.abspath(args.data)
    if os.path.isfile(os.path.join(data, "dict.txt")):
        return data
    return preprocess_wikitext(data, os.path.abspath(args.cache))


def save(path, result, start):
    result["meta"]["seconds"] = round(time.perf_counter() - start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
