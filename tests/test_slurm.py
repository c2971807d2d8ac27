"""Cluster launch scripts: valid bash, and the srun line they render agrees with their #SBATCH lines."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SBATCH = sorted((ROOT / "scripts" / "slurm").glob("*.sbatch"))
SCRIPTS = [*SBATCH, ROOT / "scripts" / "torchrun.sh", ROOT / "scripts" / "gpu_check.sh"]


def directives(script: Path) -> dict[str, str]:
    found = {}
    for line in script.read_text().splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line)
        if match:
            found[match.group(1)] = match.group(2) or ""
    return found


def render(script: Path, tmp_path: Path, env: dict[str, str]) -> list[str]:
    """Run ``script`` with ``srun`` replaced by a stub that prints its arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "srun"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    base = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path), "SLURM_SUBMIT_DIR": str(ROOT)}
    done = subprocess.run(["bash", str(script)], env={**base, **env}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_there_are_single_and_multi_node_templates():
    assert {p.name for p in SBATCH} >= {"single_node.sbatch", "multi_node.sbatch"}


@pytest.mark.parametrize("script", SBATCH, ids=lambda p: p.name)
@pytest.mark.parametrize("as_sbatch", [True, False], ids=["sbatch_env", "no_slurm_env"])
def test_srun_line_matches_the_sbatch_directives(script, as_sbatch, tmp_path):
    sbatch = directives(script)
    assert sbatch["ntasks-per-node"] == sbatch["gpus-per-node"]  # one process per GPU
    assert sbatch["signal"] == "SIGUSR1@90" and "requeue" in sbatch  # Lightning's auto-requeue
    env = {"CONFIG": "configs/bert/reviews_tiny.yaml", "RUN_DIR": str(tmp_path / "run")}
    if as_sbatch:  # what sbatch exports from the directives
        env.update(SLURM_NNODES=sbatch["nodes"], SLURM_NTASKS_PER_NODE=sbatch["ntasks-per-node"], SLURM_JOB_ID="7")
    args = render(script, tmp_path, env)
    assert args[:2] == ["lightning-transfer", "fit"]
    assert (ROOT / value(args, "--config")).is_file()
    assert value(args, "--trainer.devices") == sbatch["ntasks-per-node"]
    assert value(args, "--trainer.num_nodes") == sbatch["nodes"]
    assert value(args, "--trainer.strategy") == "ddp"
    assert value(args, "--ckpt_path") == "last"  # nothing to resume yet


def test_default_config_exists_and_resume_takes_the_newest_checkpoint(tmp_path):
    script = ROOT / "scripts" / "slurm" / "single_node.sbatch"
    run = tmp_path / "run"
    last = run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_text("x")
    args = render(script, tmp_path, {"RUN_DIR": str(run)})
    assert (ROOT / value(args, "--config")).is_file()
    assert value(args, "--ckpt_path") == str(last)
    hpc = run / "hpc_ckpt_1.ckpt"  # written by Lightning on SIGUSR1, newer than last.ckpt
    hpc.write_text("x")
    os.utime(last, (1, 1))
    assert value(render(script, tmp_path, {"RUN_DIR": str(run)}), "--ckpt_path") == str(hpc)


def test_sbatch_refuses_a_missing_config(tmp_path):
    script = ROOT / "scripts" / "slurm" / "single_node.sbatch"
    done = subprocess.run(["bash", str(script)], env={"PATH": os.environ["PATH"], "CONFIG": "configs/nope.yaml",
                                                      "SLURM_SUBMIT_DIR": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 2 and "no config file configs/nope.yaml" in done.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine would run the whole check")
def test_gpu_check_exits_with_a_clear_message_without_cuda():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and "no CUDA GPU" in done.stderr
