"""A private SLURM cluster on this machine for the tests: munge, MariaDB + slurmdbd (so ``sacct``
works, which submitit polls), slurmctld and two ``slurmd -N`` nodes, all from Debian's packages.

Every file (keys, sockets, configs, state, spool, logs, the database) lives under one temporary
directory; every daemon runs in the foreground as a child of the test process and is stopped by
its own PID. Clients find the cluster through ``SLURM_CONF`` (``cluster.env``), which ``sbatch``
passes on to the jobs. ``PrivateCluster.unavailable()`` says why the machine cannot run it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacctmgr",
           "sbatch", "sacct", "scontrol", "sinfo", "scancel", "squeue")
CLUSTER = "actionlab"
PARTITION = "cpu"
NODES = ("n1", "n2")
CPUS_PER_NODE = 16  # declared (SlurmdParameters=config_overrides): every test job runs at once
STOP_WAIT_S = 1.0  # how long stop() lets a daemon exit on SIGTERM before it kills it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {_tail(log)} "
                               f"{_tail(log.with_suffix('.out'))}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s: {_tail(log)}")


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class PrivateCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.dirs = {name: root / name for name in ("etc", "munge", "db", "state", "spool", "log", "run")}
        self.conf = self.dirs["etc"] / "slurm.conf"
        # The virtual nodes are this host under names no resolver knows; DDP's rendezvous (the
        # first node of SLURM_NODELIST on a real cluster) is its loopback address here.
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "MASTER_ADDR": "127.0.0.1"}
        self.nodes: tuple[str, ...] = NODES

    @staticmethod
    def unavailable() -> str | None:
        """Why this machine cannot run the cluster (None: it can)."""
        missing = [d for d in DAEMONS if shutil.which(d) is None]
        if missing:
            return ("SLURM/munge/MariaDB not installed (missing " + ", ".join(missing) + "); as root on "
                    "Debian: apt-get install slurm-wlm slurmdbd munge mariadb-server (.ci/run does)")
        if os.geteuid() != 0:
            return "slurmd must run as root to start jobs (run the SLURM tests as root)"
        try:
            import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        except ImportError:
            return "the submitit launcher is not installed: pip install 'actionlab[slurm]'"
        return None

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def _run(self, cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False, timeout=timeout)

    def _job_processes(self) -> list[int]:
        """Processes of this cluster's jobs (slurmstepd, scripts, srun, tasks, loader workers): all
        carry its ``SLURM_CONF``; slurmstepd outlives slurmd, so they are stopped one by one."""
        marker = f"SLURM_CONF={self.conf}".encode()
        mine = {os.getpid(), *(p.pid for _, p in self.procs)}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in mine:
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self.procs):
            self._run(["scancel", "--full", "--user", "root"], timeout=60)
            deadline = time.time() + 30
            while time.time() < deadline and self._run(["squeue", "-h"], timeout=30).stdout.strip():
                time.sleep(0.5)
        for pid in self._job_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    # After the test's jobs slurmctld was seen to sit 20 s in its shutdown (after
                    # "Saving all slurm state" and a failed write), the whole teardown of the
                    # module; with a 5 s wait it was still the module's slowest teardown (5.1 s).
                    # Every daemon's state is in this throwaway directory and the jobs are gone
                    # by now, so a daemon still running after 1 s loses nothing to SIGKILL (the
                    # others exit within 0.1 s of SIGTERM).
                    proc.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.procs.clear()

    # -- start -----------------------------------------------------------------------------------
    def start(self) -> PrivateCluster:
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._start_mariadb()
            self._start_slurmdbd()
            self._start_slurm()
        except Exception:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        key = self.dirs["munge"] / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.munge_socket = self.dirs["munge"] / "munge.socket"
        log = self.dirs["log"] / "munged.log"
        proc = self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                                      f"--key-file={key}", f"--pid-file={self.dirs['run'] / 'munged.pid'}",
                                      f"--log-file={log}", f"--seed-file={self.dirs['munge'] / 'seed'}"], log)
        deadline = time.time() + 30
        while not self.munge_socket.exists():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"munged did not start: {_tail(log)}")
            time.sleep(0.1)

    def _start_mariadb(self) -> None:
        data = self.dirs["db"]
        log = self.dirs["log"] / "mariadb.log"
        init = self._run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                          "--skip-test-db", "--auth-root-authentication-method=normal"], timeout=120)
        if init.returncode:
            raise RuntimeError(f"mariadb-install-db failed: {init.stdout[-1500:]}{init.stderr[-1500:]}")
        self.db_port = _free_port()
        proc = self._spawn("mariadbd", [
            "mariadbd", "--no-defaults", f"--datadir={data}", "--user=root", "--bind-address=127.0.0.1",
            f"--port={self.db_port}", f"--socket={self.dirs['run'] / 'mysqld.sock'}",
            f"--pid-file={self.dirs['run'] / 'mysqld.pid'}", f"--log-error={log}", "--skip-grant-tables",
            "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--skip-log-bin",
            "--performance-schema=OFF", "--max-connections=40",
        ], log)
        _wait_port(self.db_port, proc, "mariadbd", log)

    def _start_slurmdbd(self) -> None:
        self.dbd_port = _free_port()
        conf = self.dirs["etc"] / "slurmdbd.conf"
        conf.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={self.dbd_port}", "SlurmUser=root",
            f"PidFile={self.dirs['run'] / 'slurmdbd.pid'}", f"LogFile={self.dirs['log'] / 'slurmdbd.log'}",
            "DebugLevel=info", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={self.db_port}", "StorageUser=root", "StorageLoc=slurm_acct_db", "",
        ]))
        conf.chmod(0o600)
        log = self.dirs["log"] / "slurmdbd.out"
        proc = self._spawn("slurmdbd", ["slurmdbd", "-D"], log)  # reads slurmdbd.conf beside $SLURM_CONF
        _wait_port(self.dbd_port, proc, "slurmdbd", self.dirs["log"] / "slurmdbd.log", timeout=90)

    def _write_slurm_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        self.ctld_port = _free_port()
        lines = [
            f"ClusterName={CLUSTER}", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={self.ctld_port}",
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={self.dirs['state']}", f"SlurmdSpoolDir={self.dirs['spool']}/%n",
            f"SlurmctldPidFile={self.dirs['run'] / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.dirs['run']}/slurmd-%n.pid",
            f"SlurmctldLogFile={self.dirs['log'] / 'slurmctld.log'}",
            f"SlurmdLogFile={self.dirs['log']}/slurmd-%n.log",
            "SlurmctldDebug=info", "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
            # the munge socket for the slurmdbd connection (AuthInfo covers the others only)
            f"AccountingStoragePort={self.dbd_port}", f"AccountingStoragePass={self.munge_socket}",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SchedulerType=sched/builtin",
            "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
            "JobRequeue=1", "KillWait=10", "MinJobAge=600", "InactiveLimit=0", "SlurmdTimeout=60",
            f"TmpFS={self.root}",
        ]
        for name in self.nodes:
            lines.append(f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} "
                         f"CPUs={CPUS_PER_NODE} RealMemory=8000 State=UNKNOWN")
        lines.append(f"PartitionName={PARTITION} Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_slurm(self) -> None:
        self._write_slurm_conf()
        add = self._run(["sacctmgr", "-i", "add", "cluster", CLUSTER])
        if add.returncode and "already exists" not in add.stdout + add.stderr:
            raise RuntimeError(f"sacctmgr add cluster failed: {add.stdout}{add.stderr}")
        log = self.dirs["log"] / "slurmctld.out"
        ctld = self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i", "-f", str(self.conf)], log)
        _wait_port(self.ctld_port, ctld, "slurmctld", self.dirs["log"] / "slurmctld.log")
        for name in self.nodes:
            self._spawn(f"slurmd {name}", ["slurmd", "-D", "-N", name, "-f", str(self.conf)],
                        self.dirs["log"] / f"slurmd-{name}.out")
        deadline = time.time() + 60
        while time.time() < deadline:
            out = self._run(["sinfo", "-h", "-N", "-o", "%N %t"]).stdout.split()
            states = dict(zip(out[::2], out[1::2]))
            if all(states.get(n) == "idle" for n in self.nodes):
                return
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"the nodes did not become idle: {states}; {self.logs()}")

    def logs(self, chars: int = 1500) -> str:
        """The tail of every daemon log (for failure messages)."""
        return "\n".join(f"--- {p.name}\n{_tail(p, chars)}" for p in sorted(self.dirs["log"].glob("*")))
