"""The rehearsal's world: a private network namespace where raylab plays a real AWS account.

``python -m raylab.rehearsal.world --region R [--boot-delay S] -- <raylab args>`` runs as root inside
``unshare --net --mount`` (see ``enter.py``, which starts it). It

- brings up ``lo`` and a bridge whose only address is ``169.254.169.254/32`` (the VPC's router as the
  machines see it); the default route is ``unreachable``, so nothing leaves and the internet fails fast;
- serves the twin account (moto, in this process, on that address) with the rehearsal's cloud rules
  (``cloud.py``: the AMI catalog, root volume vs snapshot, IAM eventual consistency, shutting-down);
- reconciles EC2 with machines: every instance the account runs gets a machine (``machine.py``) with
  its private IP (and its Elastic IP, for the bastion), booted after the image's boot delay; a
  terminated instance's machine is stopped;
- runs ``raylab <args>`` as the operator, with the account's endpoint, and returns its exit code.

Everything the world started ends with it (each machine's PID namespace), whatever the exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylab.rehearsal.machine import BRIDGE, GATEWAY, Machine, MachineSpec, ip

ACCOUNT = "123456789012"  # moto's account
OPERATOR_IP = "52.95.110.1"  # the operator's public address as the lab sees it (no route to it here)
GONE = ("shutting-down", "terminated")
# The nodes have no internet (a private subnet whose NAT leads nowhere): uv's installer and the package
# index are unreachable, so node setup fails as it would on AWS. To rehearse a failed stage.
OFFLINE_ENV = "RAYLAB_REHEARSAL_OFFLINE"


def log(msg: str) -> None:
    print(f"[rehearsal] {msg}", file=sys.stderr, flush=True)


class World:
    def __init__(self, root: Path, shared: Path, region: str, boot_delay_s: float) -> None:
        self.root = root
        self.shared = shared
        self.region = region
        self.boot_delay_s = boot_delay_s
        self.machines: dict[str, Machine] = {}
        # the machines' disks: beside the mirror (same file system: uv links from its cache), outside
        # the lab's work dir (their processes are the account's, not the operator's), one per world
        self.machines_root = shared / "machines" / str(os.getpid())
        sweep_dead_worlds(shared / "machines")
        self.refused: set[str] = set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.server: Any = None
        self.metadata: Any = None
        self.uninstall: Any = None
        self.port = 0

    # network ----------------------------------------------------------------------------------
    def network(self) -> None:
        os.makedirs("/run/netns", exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "rl-netns", "/run/netns"], check=True)
        ip("link", "set", "lo", "up")
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{GATEWAY}/32", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        # The internet is unreachable, and says so at once (ICMP) instead of timing out: forwarding on
        # in this namespace only, towards a route that rejects everything not on the bridge.
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        ip("route", "add", "unreachable", "default")

    # the account -------------------------------------------------------------------------------
    def account(self) -> str:
        import logging

        from moto.server import ThreadedMotoServer

        from raylab.rehearsal import cloud, seed, stacks
        from raylab.rehearsal.account import install_quotas, install_vcpu_limits

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the account's request log is not the lab's
        undo_rules = cloud.install(cloud.CloudRules(), console=self.console)
        undo_quotas = install_quotas()
        undo_stacks = stacks.install()
        undo_limits = install_vcpu_limits()
        # IMDSv2 for every machine (by its address): instance facts, the instance role's credentials
        # (moto's STS), spot notices; FIS experiments act through it and through EC2
        from raylab.rehearsal import fis
        from raylab.rehearsal.metadata import Metadata, moto_assume_role, moto_lookup

        self.metadata = Metadata(moto_lookup(ACCOUNT, self.region), moto_assume_role(ACCOUNT, self.region),
                                 host=GATEWAY, port=80).start()
        undo_fis = fis.install(fis.FisHooks(notice=self.metadata.notice, rebalance=self.metadata.rebalance,
                                            log=log))
        self.uninstall = lambda: (undo_fis(), undo_limits(), undo_stacks(), undo_quotas(), undo_rules())
        self.server = ThreadedMotoServer(ip_address="0.0.0.0", port=0, verbose=False)  # noqa: S104 - this namespace has no other link
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        endpoint = f"http://{GATEWAY}:{self.port}"
        seed.account(endpoint, self.region, self.shared)
        return endpoint

    def console(self, instance_id: str) -> str | None:
        m = self.machines.get(instance_id)
        return m.console() if m else None

    # machines ----------------------------------------------------------------------------------
    def _backend(self) -> Any:
        from moto.ec2.models import ec2_backends

        return ec2_backends[ACCOUNT][self.region]

    def _spec(self, inst: Any, backend: Any) -> MachineSpec | str:
        """The machine an instance is, or why the rehearsal cannot play it."""
        from raylab.rehearsal.catalog import by_id

        ami = by_id(inst.image_id)
        if ami is None:
            return f"image {inst.image_id} is not in the rehearsal's AMI catalog"
        if not inst.key_name:
            return "no key pair: nobody could log in"
        try:
            pub = backend.key_pairs[inst.key_name].material_public
        except KeyError:
            return f"key pair {inst.key_name} does not exist"
        vpc = backend.get_vpc(backend.get_subnet(inst.subnet_id).vpc_id)
        tags = dict(backend.tags.get(inst.id, {}))  # moto's tag store, read in its own process
        role = "bastion" if tags.get("Name", "").endswith("-bastion") else "node"
        return MachineSpec(
            instance_id=inst.id, private_ip=inst.private_ip, prefix=int(vpc.cidr_block.split("/")[1]),
            user=ami.user, python=ami.python, path=tuple(ami.path),
            authorized_key=pub.decode() if isinstance(pub, bytes) else str(pub), role=role)

    def reconcile(self) -> None:
        backend = self._backend()
        for inst in list(backend.all_instances()):  # first: addresses that moved leave their old machine
            m = self.machines.get(inst.id)
            if m is None:
                continue
            for addr in [a for a in m.public_ips if a != inst.public_ip]:
                m.remove_public_ip(addr)
                log(f"{inst.id} public address {addr} moved away")
        for inst in list(backend.all_instances()):
            state = inst._state.name  # noqa: SLF001 - moto's model, read in its own process
            m = self.machines.get(inst.id)
            if state in GONE:
                if m is not None:
                    log(f"{inst.id} {state}: machine stopped")
                    m.stop()
                    del self.machines[inst.id]
                continue
            if m is None and inst.id not in self.refused and state in ("pending", "running"):
                spec = self._spec(inst, backend)
                if isinstance(spec, str):
                    self.refused.add(inst.id)
                    log(f"{inst.id}: not played ({spec})")
                    continue
                offline = os.environ.get(OFFLINE_ENV) == "1"
                m = Machine(spec, self.machines_root, self.shared, self.node_env(offline),
                            "/mnt/rehearsal/no-internet" if offline else "/mnt/rehearsal/node-bin",
                            self.boot_delay_s)
                m.boot()
                self.machines[inst.id] = m
                log(f"{inst.id} {spec.role} at {spec.private_ip} ({spec.user}, Python {spec.python})")
            if m is not None and inst.public_ip and inst.public_ip not in m.public_ips:
                m.add_public_ip(inst.public_ip)
                log(f"{inst.id} public address {inst.public_ip}")

    def node_env(self, offline: bool = False) -> dict[str, str]:
        """Environment of every machine's login shell: the nodes' internet (the mirror) and the account's
        endpoint (AWS's public endpoints, as a NAT would reach them). Credentials are the instance
        role's, from IMDS, as on EC2. ``offline``: the index is the real one, which has no route here."""
        from raylab.rehearsal.internet import node_environment

        env = node_environment(Path("/mnt/rehearsal/wheels"))
        if offline:
            env.update(UV_DEFAULT_INDEX="https://pypi.org/simple", PIP_INDEX_URL="https://pypi.org/simple")
        env["AWS_ENDPOINT_URL"] = f"http://{GATEWAY}:{self.port}"  # credentials: the instance role, by IMDS
        return env

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                with self.lock:
                    self.reconcile()
            except Exception:  # noqa: BLE001 - the world keeps playing; the operator's run decides
                log("reconcile failed: " + traceback.format_exc().strip().splitlines()[-1])
            self.stopping.wait(0.3)

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            for m in list(self.machines.values()):
                m.stop()
            self.machines.clear()
        if self.metadata is not None:
            self.metadata.stop()
        if self.server is not None:
            self.server.stop()
        if self.uninstall is not None:
            self.uninstall()
        shutil.rmtree(self.machines_root, ignore_errors=True)


def prepare_internet(shared: Path) -> None:
    """The nodes' internet (``internet.py``) as the machines see it: ``shared`` is ``/mnt/rehearsal``
    inside every machine, so the mirror's own paths are rewritten to that mount. Then uv's warm cache,
    which each machine's home gets by hardlinks (once per set of Pythons and packages)."""
    from raylab.rehearsal.internet import UV_VERSION, node_bin

    dest = node_bin(shared / "node-bin", shared / "wheels", cache=shared / "uv-dist" / UV_VERSION)
    host = str(shared.resolve())
    for f in [dest / "curl", shared / "uv-dist" / UV_VERSION / "install.sh"]:
        f.write_text(f.read_text().replace(host, "/mnt/rehearsal"))
    warm_shared(shared)


def warm_shared(shared: Path) -> bool:
    """uv's warm cache (``uvcache.warm``) for the Pythons the mirror serves and this host can play
    (``make wheelhouse``, and each world before its first machine). A failure is one line: the
    machines then install cold."""
    from raylab.rehearsal.internet import NODE_PYTHONS, UV_VERSION, extract_uv
    from raylab.rehearsal.machine import python_for
    from raylab.rehearsal.uvcache import warm

    extract_uv(shared / "wheels", UV_VERSION, shared / "uv-dist" / UV_VERSION)
    pythons = {py: exe for py in NODE_PYTHONS if (exe := python_for(py)) is not None}
    try:
        return warm(shared, pythons)
    except (OSError, subprocess.CalledProcessError) as e:  # e.g. no root for the mount namespace
        print(f"uv's warm cache for the rehearsal's machines not built ({e}): they install cold",
              file=sys.stderr)
        return False


def sweep_dead_worlds(root: Path) -> list[str]:
    """Machine disks of worlds that were killed (their PID gone): a killed world's machines died with
    it (each machine's PID namespace), their disks did not."""
    gone = []
    for d in root.glob("*") if root.is_dir() else []:
        if d.name.isdigit() and not Path(f"/proc/{d.name}").exists():
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d.name)
    return gone


def operator_env(endpoint: str, region: str) -> dict[str, str]:
    return {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "rehearsal",
            "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_DEFAULT_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/rehearsal",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/rehearsal", "AWS_PROFILE": "",
            "RAYLAB_OPERATOR_IP": OPERATOR_IP, "RAYLAB_REHEARSAL_WORLD": "1",
            "RAYLAB_ENDPOINT_FIS_ACTS": "1"}  # this account's FIS acts (rehearsal/fis.py)


def _operator_setup() -> Callable[[], None]:
    """The operator's ``preexec_fn``: Ctrl-C is its own (the world ignores it), and it dies with the
    world (a killed world's account is gone: there is nothing left for it to tear down)."""
    from raylab.procs import death_signal

    def ctrl_c_is_its_own() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return death_signal(signal.SIGKILL, then=ctrl_c_is_its_own)


def wait_operator(op: subprocess.Popen[bytes]) -> int:
    """Wait for the operator; each SIGTERM the world gets (``enter.run_world`` passes a Ctrl-C on as
    one) reaches the operator as Ctrl-C, so it tears down while the account still answers."""
    while True:
        try:
            return op.wait()
        except KeyboardInterrupt:
            if op.poll() is None:
                op.send_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="raylab.rehearsal.world")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--shared", type=Path, required=True)
    p.add_argument("--region", default="us-west-2")
    p.add_argument("--boot-delay", type=float, default=6.0)
    p.add_argument("--fis-time", type=float, default=1.0,
                   help="FIS durations x this (1: AWS's time; the lab's scaled time is 0.1-0.25)")
    p.add_argument("--report", type=Path)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    a.root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAYLAB_REHEARSAL_FIS_SCALE", f"{a.fis_time:g}")  # read by rehearsal/fis.py
    world = World(a.root, a.shared, a.region, a.boot_delay)
    # A Ctrl-C reaches the world as SIGTERM (enter.run_world); wait_operator hands it to the operator.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc = 1
    try:
        prepare_internet(a.shared)
        world.network()
        endpoint = world.account()
        threading.Thread(target=world.loop, daemon=True, name="reconcile").start()
        log(f"account at {endpoint} ({a.region}); machines boot in {a.boot_delay:.0f} s")
        env = operator_env(endpoint, a.region)
        env.pop("AWS_PROFILE")
        op = subprocess.Popen([sys.executable, "-m", "raylab", *cmd], env=env,
                              preexec_fn=_operator_setup())  # noqa: PLW1509 - signals and prctl only
        rc = wait_operator(op)
    except KeyboardInterrupt:
        rc = 130
    finally:
        played = {i: m.spec.role for i, m in world.machines.items()}
        world.shutdown()
        if a.report:
            a.report.write_text(json.dumps({"rc": rc, "machines_at_end": played,
                                            "refused": sorted(world.refused)}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
