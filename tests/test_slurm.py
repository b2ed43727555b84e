"""SLURM end to end on a private cluster (``tests/slurm_cluster.py``), through the README's commands.

One module-scoped run submits every command below at once, each from its own fresh copy of the
entry point and configs (``train.py`` + ``conf/``; no path overrides: the project root is the
copy), and plays the cluster's part while they run: it preempts jobs once their epoch 0 is saved
(``scontrol requeue``, ``scancel -s USR1``, ``scancel -s USR2``, with the recipe's 2 loader workers
on) and starts requeued jobs at once (Debian's Slurm holds them 121 s). The tests then check
each outcome: the sweep commands exit 0; a preempted job resumes from the newest checkpoint of
its own run directory and ends with the global step and epoch of an uninterrupted run, in one
W&B run; DDP trains over 2 tasks on one node and over 2 nodes. ``make test-slurm`` runs this
module alone; without SLURM/munge/MariaDB (or not as root) it skips and says why.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf
from slurm_cluster import PrivateCluster

pytestmark = pytest.mark.slow

# Exactly as in README.md (test_commands_are_the_readmes checks it).
COMMANDS = {
    "sweep": "python train.py -m hydra/launcher=slurm experiment=quick optimizer.lr=2e-3,5e-3",
    "single": "python train.py -m hydra/launcher=slurm experiment=quick",
    "ddp_node": "python train.py -m hydra/launcher=slurm experiment=quick trainer=ddp_cpu",
    "ddp_nodes": "python train.py -m hydra/launcher=slurm experiment=quick trainer=ddp_multinode trainer.num_nodes=2",
}
# run name -> command; "reference" is the uninterrupted twin of "preempted".
RUNS = {"reference": "sweep", "preempted": "sweep", "single": "single", "ddp_node": "ddp_node",
        "ddp_nodes": "ddp_nodes"}
# (run, job number) -> how the cluster preempts it once its epoch 0 is saved.
PREEMPT = {("preempted", 0): "requeue", ("preempted", 1): "USR1", ("single", 0): "USR2"}
STEPS_PER_EPOCH = 8  # experiment=quick: 64 clips / batch 8 (per rank: 32 / 4)
DEADLINE_S = 720
ACCOUNTING_WAIT_S = 60  # slurmctld reports a job's end to slurmdbd asynchronously
SETTLED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
           "DEADLINE")


@dataclass
class Run:
    name: str
    command: str
    root: Path
    proc: subprocess.Popen | None = None
    out: Path | None = None
    signalled: dict[int, tuple[str, int]] = field(default_factory=dict)  # job -> (how, step)

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out and self.out.is_file() else ""

    @property
    def sweep_dir(self) -> Path | None:
        found = sorted((self.root / "logs" / "train" / "multiruns").glob("*"))
        return found[-1] if found else None

    def job_dir(self, num: int) -> Path:
        assert self.sweep_dir is not None, self.diagnostics()
        return self.sweep_dir / str(num)

    def slurm_ids(self) -> dict[int, str]:
        """job number -> SLURM id from the submitit folder: array tasks ``A_k`` for a sweep, the
        plain job id when the sweep has one job (submitit then submits no array)."""
        folder = self.sweep_dir / ".submitit" if self.sweep_dir else None
        names = [p.name for p in folder.iterdir()] if folder and folder.is_dir() else []
        ids = {int(m.group(2)): m.group(0) for m in (re.fullmatch(r"(\d+)_(\d+)", n) for n in names) if m}
        plain = [n for n in names if n.isdigit()]
        return ids or ({0: plain[0]} if len(plain) == 1 else {})

    def diagnostics(self, chars: int = 3000) -> str:
        parts = [f"== {self.name}: {self.command} (rc {self.proc.returncode if self.proc else None})",
                 self.output[-chars:]]
        if self.sweep_dir:
            for log in sorted((self.sweep_dir / ".submitit").rglob("*_log.*")):
                text = log.read_text(errors="replace")
                parts.append(f"-- {log.name}\n{text[-chars:]}")
        return "\n".join(parts)


def _global_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # not there yet, or being replaced
        return None


def _fresh_copy(dest: Path) -> Path:
    """The entry points and configs, as a fresh clone has them (the package is installed)."""
    dest.mkdir(parents=True)
    for name in ("train.py", "eval.py"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "conf", dest / "conf")
    return dest


def _preempt(cluster: PrivateCluster, job: str, how: str) -> None:
    cmd = ["scontrol", "requeue", job] if how == "requeue" else ["scancel", "-s", how, job]
    done = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, f"{cmd}: {done.stderr}"


def _start_held_jobs(cluster: PrivateCluster) -> None:
    """Requeued jobs wait 121 s for their BeginTime; a busy cluster's scheduler would start them
    as soon as it could, and so does this one."""
    queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%r"], env=cluster.env, capture_output=True,
                           text=True, check=False, timeout=30).stdout
    for line in queue.splitlines():
        job, _, reason = line.partition("|")
        if reason.strip() == "BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=cluster.env,
                           capture_output=True, check=False, timeout=30)


def _drive(cluster: PrivateCluster, runs: dict[str, Run]) -> None:
    deadline = time.time() + DEADLINE_S
    while any(r.proc.poll() is None for r in runs.values()):
        if time.time() > deadline:
            raise TimeoutError(f"the SLURM runs did not finish in {DEADLINE_S} s")
        _start_held_jobs(cluster)
        for (name, num), how in PREEMPT.items():
            run = runs[name]
            if num in run.signalled or run.sweep_dir is None:
                continue
            step = _global_step(run.job_dir(num) / "checkpoints" / "last.ckpt")
            slurm_id = run.slurm_ids().get(num)
            if step is not None and step >= STEPS_PER_EPOCH and slurm_id:
                _preempt(cluster, slurm_id, how)
                run.signalled[num] = (how, step)
        time.sleep(0.5)


def _wait_for_accounting(cluster: PrivateCluster, runs: dict[str, Run]) -> None:
    """Wait until the accounting database has the end of every job's last attempt. A sweep
    command returns once its jobs wrote their results, which can be before slurmctld's message
    about the job's end reached slurmdbd: ``sacct`` then still says RUNNING (seen when the last
    job to finish was a requeued one). After the deadline the tests report what sacct says."""
    jobs = ",".join(job for run in runs.values() for job in run.slurm_ids().values())
    deadline = time.time() + ACCOUNTING_WAIT_S
    while jobs and time.time() < deadline:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", jobs], env=cluster.env,
                             capture_output=True, text=True, check=False, timeout=60).stdout
        states = [line.split("|")[1].split()[0] for line in out.splitlines() if "|" in line]
        if states and all(state in SETTLED for state in states):
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = PrivateCluster.unavailable()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("slurm")
    cluster = PrivateCluster(base / "cluster")
    try:
        cluster.start()
    except Exception as err:
        cluster.stop()
        pytest.skip(f"this machine cannot run the private SLURM cluster: {err}")
    env = {**cluster.env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           # one copy of the small dataset for every run (README: ACTIONLAB_DATA)
           "ACTIONLAB_DATA": str(base / "data")}
    env.pop("ACTIONLAB_ROOT", None)
    runs = {name: Run(name, COMMANDS[cmd], _fresh_copy(base / name / "actionlab")) for name, cmd in RUNS.items()}
    start = time.time()
    try:
        for run in runs.values():
            run.out = run.root.parent / "submitter.log"
            argv = [sys.executable, *shlex.split(run.command)[1:]]
            with open(run.out, "wb") as out:
                run.proc = subprocess.Popen(argv, cwd=run.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        _drive(cluster, runs)
        _wait_for_accounting(cluster, runs)
        print(f"the SLURM runs took {time.time() - start:.0f} s")
        yield cluster, runs
    finally:
        for run in runs.values():
            if run.proc is not None and run.proc.poll() is None:
                os.kill(run.proc.pid, signal.SIGKILL)
                run.proc.wait()
        cluster.stop()


def _sacct(cluster: PrivateCluster, job: str) -> dict[str, Any]:
    """The job's last attempt from the accounting database, and the states of all its attempts."""
    out = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-o", "JobID,State,NodeList", "-j", job],
                         env=cluster.env, capture_output=True, text=True, check=False, timeout=60)
    attempts = [line.split("|") for line in out.stdout.splitlines() if line.split("|")[0] == job]
    assert attempts, f"sacct knows no job {job}: {out.stderr}"
    return {"state": attempts[-1][1], "nodes": attempts[-1][2], "attempts": [a[1] for a in attempts]}


def _final(job_dir: Path) -> tuple[int, int]:
    ckpt = torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["epoch"]


def _wandb_ids(job_dir: Path) -> list[str]:
    return [p.name.rsplit("-", 1)[-1] for p in sorted((job_dir / "wandb").glob("offline-run-*"))]


def test_commands_are_the_readmes():
    readme = (REPO / "README.md").read_text()
    for command in COMMANDS.values():
        assert command in readme, f"README.md lost the documented command: {command}"


def test_sweep_of_two_jobs(slurm):
    cluster, runs = slurm
    run = runs["reference"]
    assert run.proc.returncode == 0, run.diagnostics()
    ids = run.slurm_ids()
    assert sorted(ids) == [0, 1], run.diagnostics()
    lrs = set()
    for num, job in ids.items():
        assert _sacct(cluster, job)["state"] == "COMPLETED"
        assert _final(run.job_dir(num)) == (3 * STEPS_PER_EPOCH, 3)
        assert len(_wandb_ids(run.job_dir(num))) == 1
        lrs.add(OmegaConf.load(run.job_dir(num) / ".hydra" / "config.yaml").optimizer.lr)
    assert lrs == {2e-3, 5e-3}
    # CPU jobs ask for no GPU and workers + 1 CPUs (the launcher derived the request)
    script = next((run.sweep_dir / ".submitit").rglob("*_submission.sh")).read_text()
    assert "--cpus-per-task=3" in script and "gpus" not in script
    assert f"{sys.executable} -m actionlab.ops.build --quiet\n" in script


@pytest.mark.parametrize("name, num", sorted(PREEMPT))
def test_preempted_job_resumes_and_matches_the_uninterrupted_run(slurm, name, num):
    cluster, runs = slurm
    run, reference = runs[name], runs["reference"]
    how = PREEMPT[(name, num)]
    assert num in run.signalled, f"the run ended before it could be preempted ({how})\n{run.diagnostics()}"
    assert run.proc.returncode == 0, run.diagnostics()  # the sweep command saw the job through
    job_dir = run.job_dir(num)
    assert _final(job_dir) == _final(reference.job_dir(0)) == (3 * STEPS_PER_EPOCH, 3)
    log = (job_dir / "train.log").read_text()
    resumed = re.findall(r"auto_resume: continuing from (\S+)", log)
    assert resumed and Path(resumed[-1]).parent == job_dir and Path(resumed[-1]).name.startswith("hpc_ckpt_"), log
    saved = re.findall(r"saved (\S+hpc_ckpt_\d+\.ckpt) at global step (\d+)", log)
    assert saved and int(saved[-1][1]) > run.signalled[num][1] - 1  # saved at the signal, not before
    ids = _wandb_ids(job_dir)
    assert len(ids) == 2 and len(set(ids)) == 1, ids  # two attempts, one W&B run
    info = _sacct(cluster, run.slurm_ids()[num])
    assert info["state"] == "COMPLETED" and len(info["attempts"]) >= 2, info  # requeued, then done
    job_logs = run.sweep_dir / ".submitit" / run.slurm_ids()[num]
    task_logs = "".join(p.read_text(errors="replace") for p in job_logs.glob("*_log.*"))
    for symptom in ("killed by signal", "A temporary saved file already exists", "Traceback"):
        assert symptom not in task_logs, f"{symptom!r} in {job_logs}:\n{run.diagnostics()}"


@pytest.mark.parametrize("name, nodes", [("ddp_node", 1), ("ddp_nodes", 2)])
def test_ddp_over_two_tasks(slurm, name, nodes):
    cluster, runs = slurm
    run = runs[name]
    assert run.proc.returncode == 0, run.diagnostics()
    job = run.slurm_ids()[0]
    info = _sacct(cluster, job)
    assert info["state"] == "COMPLETED", info
    used = subprocess.run(["scontrol", "show", "hostnames", info["nodes"]], env=cluster.env, capture_output=True,
                          text=True, check=False, timeout=30).stdout.split()
    assert len(used) == nodes and set(used) <= set(cluster.nodes), info
    task_logs = sorted((run.sweep_dir / ".submitit" / job).glob(f"{job}_*_log.*"))
    assert len(task_logs) == 4, task_logs  # out + err per task (rank)
    members = {m for p in task_logs for m in re.findall(r"MEMBER: (\d)/2", p.read_text(errors="replace"))}
    assert members == {"1", "2"}, run.diagnostics()
    # the global batch of 8 is split over the ranks: each takes 4 clips, 8 steps per epoch
    assert _final(run.job_dir(0)) == (3 * STEPS_PER_EPOCH, 3)
