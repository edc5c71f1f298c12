"""A real one-node Slurm cluster for tests: munged, MariaDB, slurmdbd, slurmctld, slurmd (Debian 12).

:class:`SlurmTestbed` writes ``/etc/slurm/slurm.conf`` and ``slurmdbd.conf`` (Slurm's client commands,
run by the ``heroes`` account over ssh, read them from there), then starts, each in the foreground as a
child process stopped by PID::

    munged (unless one already runs)  ->  mariadbd (own datadir, free port)  ->  slurmdbd :6819
      ->  sacctmgr: cluster "heroes", account "heroes", users  ->  slurmctld :6817  ->  slurmd -N localhost :6818

Slurm uses fixed ports and ``/etc/slurm``, so the whole lifetime is guarded by ``exclusive("slurm")``: a
second test session on the machine waits. Every start is a clean slate: a fresh MariaDB datadir
(``mariadb-install-db`` takes half a second), empty state and spool directories, so job ids start at 1
and ``sacct`` shows only this session's jobs.

Capacity: the node is declared with ``max(32, real CPUs)`` CPUs (``SlurmdParameters=config_overrides``;
proctrack/linuxproc and task/none enforce nothing), so 32+ one-CPU ``sleep`` jobs run at once on a
2-core machine and the rest wait in the queue; ``MaxJobCount`` is 100000 and finished jobs stay visible
to ``scontrol``/``squeue -t all`` for a day (``MinJobAge``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ._daemon import require_root, unused_port, wait_ready
from .base import (
    Component,
    ComponentError,
    exclusive,
    pid_alive,
    port_open,
    read_pidfile,
    stop_pid,
    testbed_dir,
)
from .sshd import SshdTestbed, ensure_account

CONF_DIR = Path("/etc/slurm")
CONF_MARKER = "# written by jupyter_heroes.testing.slurm"
SLURMCTLD_PORT, SLURMD_PORT, SLURMDBD_PORT = 6817, 6818, 6819
MUNGE_PIDFILE = Path("/run/munge/munged.pid")


def _jwt_plugin_installed() -> bool:
    return bool(glob.glob("/usr/lib/*/slurm-wlm/auth_jwt.so") or glob.glob("/usr/lib*/slurm/auth_jwt.so"))


def _slurmd_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as ``slurmd -C`` sees this machine."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return int(fields.get("CPUs", "1")), int(fields.get("RealMemory", "1024"))


class SlurmTestbed(Component):
    """Slurm 22.05 with accounting through slurmdbd on MariaDB; cluster ``heroes``, partitions ``debug``
    (default) and ``long``, one node ``localhost``. Use as a context manager or ``start()``/``stop()``."""

    name = "slurm"
    cluster = "heroes"
    partitions = ("debug", "long")
    node = "localhost"

    def __init__(
        self,
        workdir: Path | None = None,
        users: Iterable[str] = ("heroes",),
        cpus: int = 32,
        db_dir: Path | None = None,
    ) -> None:
        super().__init__(workdir or testbed_dir() / self.name)
        self.users = tuple(users)
        self.min_cpus = cpus
        self.cpus = 0
        self.conf_path = CONF_DIR / "slurm.conf"
        self.dbd_conf_path = CONF_DIR / "slurmdbd.conf"
        self.jwt = _jwt_plugin_installed()
        self.jwt_key_path = self.workdir / "jwt_hs256.key"
        self.mysql_port = 0
        self.db_dir = db_dir or _default_db_dir(self.workdir)
        self.startup_seconds: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock: contextlib.ExitStack | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def _start(self) -> None:
        require_root("the Slurm test bed")
        lock = self._lock = contextlib.ExitStack()
        self._timed("lock", lambda: lock.enter_context(exclusive("slurm")))
        self._timed("cleanup", self._clean_slate)
        self._timed("configure", self._configure)
        self._timed("munged", self._start_munge)
        self._timed("mariadb", self._start_mariadb)
        self._timed("slurmdbd", self._start_slurmdbd)
        self._timed("sacctmgr", self._add_associations)
        self._timed("slurmctld", self._start_slurmctld)
        self._timed("slurmd", self._start_slurmd)

    def stop(self) -> None:
        try:
            if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
                self._cancel_all_jobs()
            for daemon in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
                proc = self._procs.pop(daemon, None)
                if proc is not None:
                    self._stop_proc(proc)
                    (self.workdir / "pids" / f"{daemon}.pid").unlink(missing_ok=True)
            super().stop()
            shutil.rmtree(self.db_dir, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def stop_controller(self) -> None:
        """Stop slurmctld by PID (fault injection). Client commands then fail after ~10 s of retries."""
        proc = self._procs.pop("slurmctld", None)
        if proc is None:
            raise ComponentError("slurmctld is not running")
        self._stop_proc(proc)

    def start_controller(self) -> None:
        """Start slurmctld again, recovering its saved state (queued and running jobs survive)."""
        if "slurmctld" in self._procs:
            raise ComponentError("slurmctld is already running")
        self._start_slurmctld(clear_state=False)
        self._wait_node_up(60)

    @property
    def controller_running(self) -> bool:
        p = self._procs.get("slurmctld")
        return p is not None and p.poll() is None

    # --- steps -----------------------------------------------------------------------------------
    def _timed(self, what: str, step: Callable[[], None]) -> None:
        t0 = time.monotonic()
        step()
        self.startup_seconds[what] = round(time.monotonic() - t0, 2)

    def _clean_slate(self) -> None:
        """Stop daemons a crashed earlier session left behind (by their recorded PIDs), then wipe."""
        pid_dir = self.workdir / "pids"
        for pidfile in sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else []:
            pid = read_pidfile(pidfile)
            exe = pidfile.stem
            if pid and pid_alive(pid) and _cmdline(pid).startswith(exe):
                stop_pid(pid, grace=self.stop_grace)
        for port, daemon in (
            (SLURMCTLD_PORT, "slurmctld"),
            (SLURMD_PORT, "slurmd"),
            (SLURMDBD_PORT, "slurmdbd"),
        ):
            if port_open(port):
                raise ComponentError(
                    f"port {port} ({daemon}) is already in use on 127.0.0.1: another Slurm runs on this machine. "
                    "Stop it (by its PID file in /run/slurm) before running the test bed."
                )
        for sub in ("state", "spool", "run", "pids"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        shutil.rmtree(self.db_dir, ignore_errors=True)
        for f in self.workdir.glob("*.log"):
            f.unlink()

    def _configure(self) -> None:
        slurm = pwd.getpwnam("slurm")
        for user in self.users:
            ensure_account(user)
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        for sub, owner in (("state", slurm), ("spool", None), ("run", slurm), ("pids", None)):
            d = self.workdir / sub
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
            if owner:
                os.chown(d, owner.pw_uid, owner.pw_gid)
        real_cpus, memory = _slurmd_hardware()
        self.cpus = max(self.min_cpus, real_cpus)
        self.mysql_port = unused_port()
        self._db_password = secrets.token_urlsafe(18)
        auth_alt = ""
        if self.jwt:  # AuthAltTypes=auth/jwt without slurm-wlm-jwt-plugin makes slurmctld die at start
            if not self.jwt_key_path.exists():
                self.jwt_key_path.write_bytes(secrets.token_bytes(32))
            os.chown(self.jwt_key_path, slurm.pw_uid, slurm.pw_gid)
            self.jwt_key_path.chmod(0o600)
            auth_alt = f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={self.jwt_key_path}\n"
        w = self.workdir
        _backup_foreign(self.conf_path)
        self.conf_path.write_text(
            f"""{CONF_MARKER} (test bed; overwritten at every start)
ClusterName={self.cluster}
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
{auth_alt}StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/run/slurmctld.pid
SlurmdPidFile={w}/run/slurmd.pid
SlurmctldPort={SLURMCTLD_PORT}
SlurmdPort={SLURMD_PORT}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_min_interval=200000,default_queue_depth=200
MaxJobCount=100000
MaxArraySize=10001
MinJobAge=86400
KillWait=2
InactiveLimit=0
ReturnToService=2
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={SLURMDBD_PORT}
NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} CPUs={self.cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES DefaultTime=01:00:00 MaxTime=1-00:00:00 State=UP
PartitionName=long Nodes={self.node} DefaultTime=01:00:00 MaxTime=INFINITE State=UP
"""
        )
        self.conf_path.chmod(0o644)
        _backup_foreign(self.dbd_conf_path)
        self.dbd_conf_path.write_text(
            f"""{CONF_MARKER} (test bed; overwritten at every start)
AuthType=auth/munge
{auth_alt}DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={SLURMDBD_PORT}
SlurmUser=slurm
PidFile={w}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.mysql_port}
StorageUser=slurm
StoragePass={self._db_password}
StorageLoc=slurm_acct_db
"""
        )
        os.chown(self.dbd_conf_path, slurm.pw_uid, slurm.pw_gid)
        self.dbd_conf_path.chmod(0o600)  # slurmdbd refuses a conf other users can read

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        if not Path("/etc/munge/munge.key").exists():
            self.run(["mungekey", "--create"])
        os.chown("/etc/munge/munge.key", munge.pw_uid, munge.pw_gid)
        os.chmod("/etc/munge/munge.key", 0o600)
        for d, mode in (("/run/munge", 0o755), ("/var/lib/munge", 0o711), ("/var/log/munge", 0o700)):
            Path(d).mkdir(parents=True, exist_ok=True)
            os.chown(d, munge.pw_uid, munge.pw_gid)
            os.chmod(d, mode)
        pid = read_pidfile(MUNGE_PIDFILE)
        if pid and pid_alive(pid) and _munge_works():
            return  # a munged is already running (a system one, or a leftover): share it, never stop it
        self._daemon(
            "munged", ["/usr/sbin/munged", "--foreground", "--force", "--num-threads=8"], user="munge"
        )
        wait_ready(_munge_works, 15, "munged", self.log_path("munged"), [self._procs["munged"]])

    def _start_mariadb(self) -> None:
        mysql = pwd.getpwnam("mysql")
        data, run = self.db_dir / "data", self.db_dir / "run"
        for d in (data, run):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, mysql.pw_uid, mysql.pw_gid)
        self.run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}",
                  "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve",
             "--innodb-log-file-size=64M"],
                 timeout=120, cwd=self.workdir)  # fmt: skip
        self._mysql_socket = run / "mysqld.sock"
        self._daemon(
            "mariadbd",
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}",
             f"--socket={self._mysql_socket}", f"--pid-file={run / 'mysqld.pid'}", f"--port={self.mysql_port}",
             "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=1G", "--innodb-log-file-size=64M",
             "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--innodb-lock-wait-timeout=900",
             "--max-connections=200"],
        )  # fmt: skip
        ping = ["mariadb-admin", "--no-defaults", f"--socket={self._mysql_socket}", "ping"]
        wait_ready(lambda: _ok(ping), 60, "mariadbd", self.log_path("mariadbd"), [self._procs["mariadbd"]])
        self.run(["mariadb", "--no-defaults", f"--socket={self._mysql_socket}", "-e",
                  f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self._db_password}';"
                  "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"])  # fmt: skip

    def _start_slurmdbd(self) -> None:
        self._daemon("slurmdbd", ["/usr/sbin/slurmdbd", "-D"])
        wait_ready(
            lambda: port_open(SLURMDBD_PORT) and _ok(["sacctmgr", "-n", "-P", "list", "cluster"], timeout=10),
            90, "slurmdbd", self.log_path("slurmdbd"), [self._procs["slurmdbd"]],
        )  # fmt: skip

    def _add_associations(self) -> None:
        """Cluster, account and user associations, so every job is attributed in ``sacct``."""
        sacctmgr = ["sacctmgr", "-i", "-Q"]
        self.run([*sacctmgr, "add", "cluster", self.cluster])
        self.run([*sacctmgr, "add", "account", "heroes", f"Cluster={self.cluster}",
                  "Description=HEROES test bed", "Organization=heroes"])  # fmt: skip
        users = ",".join(dict.fromkeys(("root", *self.users)))
        self.run([*sacctmgr, "add", "user", users, "Account=heroes", f"Cluster={self.cluster}"])

    def _start_slurmctld(self, clear_state: bool = True) -> None:
        self._daemon("slurmctld", ["/usr/sbin/slurmctld", "-D", *(["-c"] if clear_state else [])])
        wait_ready(lambda: _ok(["scontrol", "ping"], timeout=10), 30,
                   "slurmctld", self.log_path("slurmctld"), [self._procs["slurmctld"]])  # fmt: skip

    def _start_slurmd(self) -> None:
        self._daemon("slurmd", ["/usr/sbin/slurmd", "-D", "-N", self.node])
        self._wait_node_up(30)

    def _wait_node_up(self, timeout: float) -> None:
        def node_up() -> bool:
            cp = subprocess.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"], capture_output=True, text=True,
                                timeout=15)  # fmt: skip
            states = set(cp.stdout.split())
            return (
                cp.returncode == 0 and bool(states) and states <= {"idle", "mixed", "allocated", "completing"}
            )

        procs = [p for n, p in self._procs.items() if n in ("slurmctld", "slurmd")]
        wait_ready(node_up, timeout, f"slurm node {self.node}", self.log_path("slurmd"), procs, interval=0.2)

    def _cancel_all_jobs(self) -> None:
        """Cancel every job so no ``sleep`` outlives the test bed (slurmstepd detaches from slurmd)."""
        for partition in self.partitions:
            subprocess.run(["scancel", "-p", partition], capture_output=True, timeout=15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cp = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=15)
            if cp.returncode != 0 or not cp.stdout.strip():
                return
            time.sleep(0.3)

    # --- helpers ---------------------------------------------------------------------------------
    def _stop_proc(self, proc: subprocess.Popen) -> None:
        stop_pid(proc.pid, grace=self.stop_grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        with contextlib.suppress(ValueError):
            self.pids.remove(proc.pid)

    def _daemon(self, name: str, argv: list[str], user: str | None = None) -> subprocess.Popen:
        proc = self.spawn(argv, name, user=user)
        self._procs[name] = proc
        (self.workdir / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc


@dataclass
class SlurmCluster:
    """Slurm reached the way the HEROES backend reaches it: over ssh as the ``heroes`` account."""

    slurm: SlurmTestbed
    ssh: SshdTestbed
    partitions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        self.partitions = self.partitions or self.slurm.partitions


def _default_db_dir(workdir: Path) -> Path:
    """MariaDB's datadir: on tmpfs (``/dev/shm``) when there is one, else in the workdir. Creating the
    system tables and the ~40 accounting tables costs ~1000 fsyncs: 8 s on a VM disk, 2 s on tmpfs."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and not str(workdir).startswith(str(shm)):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize >= 512 * 2**20:  # ~100 MB used; containers may have a 64 MB /dev/shm
            return shm / f"heroes-testbed-mariadb-{workdir.name}"
    return workdir / "mariadb"


def _ok(argv: list[str], timeout: float = 10) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def _munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5, check=True).stdout
        return subprocess.run(["unmunge"], input=cred, capture_output=True, timeout=5).returncode == 0
    except (subprocess.SubprocessError, OSError):
        return False


def _cmdline(pid: int) -> str:
    """Basename of the program of *pid* (to recognise our own leftovers before stopping them)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""
    return Path(argv0).name


def _backup_foreign(path: Path) -> None:
    """Keep a copy of a Slurm config the test bed did not write (a developer's own cluster)."""
    if path.exists() and CONF_MARKER not in path.read_text(errors="replace"):
        backup = path.with_name(path.name + ".before-heroes-testbed")
        if not backup.exists():
            shutil.copy2(path, backup)
