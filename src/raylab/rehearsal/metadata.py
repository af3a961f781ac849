"""The rehearsal's instance metadata service: IMDSv2 at 169.254.169.254:80 for every machine.

Every machine reaches the world's bridge address on-link, so one server in the world answers them
all and tells them apart as EC2 does, by where the request comes from: ``lookup(source_ip)`` gives
the instance's facts (``InstanceFacts``), or None (an address the account does not know: 404).
What a node asks for is served by the shared IMDSv2 logic (``raylab.aws.imds_server``: tokens,
``instance-id``, ``instance-type``, ``instance-life-cycle``, ``placement/availability-zone``,
``spot/instance-action``, ``events/recommendations/rebalance``), plus what only an account can give:

- ``iam/security-credentials/``: the name of the instance profile's role (404 without a profile);
- ``iam/security-credentials/<role>``: ``{"Code": "Success", "LastUpdated", "Type": "AWS-HMAC",
  "AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`` from ``assume_role(role, instance_id)``
  (``moto_assume_role``: moto's STS AssumeRole, session name = the instance id, so GetCallerIdentity
  says ``assumed-role/<role>/<instance-id>`` as on EC2). The credentials are re-issued when less than
  ``REFRESH_BEFORE_S`` remain, so botocore never meets near-expired ones. A role EC2 may not assume
  gets a 200 whose Code is ``AssumeRoleUnauthorizedAccess``, as EC2 answers;
- ``iam/info`` (the profile's ARN) and ``local-ipv4``.

IMDSv2 as the instance's ``MetadataOptions.HttpTokens`` says: ``required`` (raylab's launch
configuration) refuses a GET without token with 401. ``notice``/``rebalance`` publish the spot
notices (``raylab.rehearsal.fis`` calls them). botocore on a node with no keys in its environment
finds this server through its default endpoint, exactly as on EC2.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

from raylab.aws.imds_server import ImdsHandler, InstanceMetadata, MetadataStore, Response, aws_time, handle

REFRESH_BEFORE_S = 1800.0  # EC2 offers new role credentials well before the old ones expire
CREDENTIALS_S = 21600  # how long the credentials moto_assume_role asks for last (EC2's are ~6 h)


@dataclass(frozen=True)
class InstanceFacts:
    """What EC2 knows about the instance behind a source address."""

    instance_id: str
    instance_type: str
    az: str
    lifecycle: str  # "spot" | "on-demand", as instance-life-cycle answers
    private_ip: str
    role: str | None = None  # the instance profile's role name; None: no profile
    profile_arn: str | None = None
    profile_id: str | None = None
    http_tokens: str = "required"  # the instance's MetadataOptions.HttpTokens


Lookup = Callable[[str], InstanceFacts | None]
AssumeRole = Callable[[str, str], dict[str, str]]  # (role name, instance id) -> credentials


class CannotAssume(Exception):
    """EC2 cannot assume the instance's role (IMDS answers a Code, not credentials)."""


class Metadata:
    """One IMDSv2 server for every machine of the world, which it tells apart by source address."""

    def __init__(self, lookup: Lookup, assume_role: AssumeRole, host: str = "169.254.169.254",
                 port: int = 80, now: Callable[[], float] = time.time) -> None:
        self.lookup = lookup
        self.assume_role = assume_role
        self.store = MetadataStore()
        self._now = now
        # (instance id, role) -> (the credentials document, its expiry)
        self._creds: dict[tuple[str, str], tuple[dict[str, str], float]] = {}
        self._lock = threading.Lock()
        self._srv = _Server((host, port), _Handler)
        self._srv.metadata = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._srv.server_address[1])

    def start(self) -> Metadata:
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.1,), daemon=True,
                                        name="rehearsal-imds")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._srv.shutdown()
            self._thread = None
        self._srv.server_close()

    def notice(self, instance_id: str, seconds: float, action: str = "terminate") -> None:
        """``spot/instance-action`` of that instance: ``action`` in ``seconds``."""
        self.store.mark_interruption(instance_id, seconds, action)

    def rebalance(self, instance_id: str) -> None:
        """``events/recommendations/rebalance`` of that instance, noticed now."""
        self.store.mark_rebalance(instance_id)

    def answer(self, source_ip: str, method: str, path: str, headers: dict[str, str]) -> Response:
        """One request from ``source_ip`` (no socket: the HTTP handler and tests call this)."""
        facts = self.lookup(source_ip)
        if facts is None:
            return Response(404, "Not Found")
        self.store.register(facts.instance_id, instance_type=facts.instance_type, az=facts.az,
                            lifecycle=facts.lifecycle, http_tokens=facts.http_tokens)
        if not path.startswith("/"):
            path = "/" + path
        return handle(self.store, method, f"/{facts.instance_id}{path}", headers,
                      now=self._now(), extra=lambda md, sub: self._extra(facts, md, sub))

    # what only the account knows -----------------------------------------------------------------
    def _extra(self, facts: InstanceFacts, md: InstanceMetadata, sub: str) -> Response | None:
        creds_path = "iam/security-credentials"
        if sub == "local-ipv4":
            return Response(200, facts.private_ip)
        if sub == "iam/info":
            if facts.profile_arn is None:
                return Response(404, "Not Found")
            return Response(200, json.dumps({
                "Code": "Success", "LastUpdated": aws_time(datetime.now(UTC)),
                "InstanceProfileArn": facts.profile_arn,
                "InstanceProfileId": facts.profile_id}))
        if sub == creds_path:
            return Response(200, facts.role) if facts.role else Response(404, "Not Found")
        if sub.startswith(creds_path + "/"):
            role = sub[len(creds_path) + 1:]
            if not facts.role or role != facts.role:
                return Response(404, "Not Found")
            return self._credentials(md.instance_id, role)
        return None

    def _credentials(self, instance_id: str, role: str) -> Response:
        now = self._now()
        with self._lock:
            cached = self._creds.get((instance_id, role))
            if cached is None or cached[1] - now < REFRESH_BEFORE_S:
                try:
                    creds = self.assume_role(role, instance_id)
                except CannotAssume as e:
                    return Response(200, json.dumps({"Code": "AssumeRoleUnauthorizedAccess",
                                                     "Message": str(e),
                                                     "LastUpdated": _stamp(now)}, indent=2))
                cached = ({"Code": "Success", "LastUpdated": _stamp(now), "Type": "AWS-HMAC",
                           "AccessKeyId": creds["AccessKeyId"],
                           "SecretAccessKey": creds["SecretAccessKey"],
                           "Token": creds.get("Token") or creds["SessionToken"],
                           "Expiration": creds["Expiration"]}, _parse_stamp(creds["Expiration"]))
                self._creds[(instance_id, role)] = cached
        return Response(200, json.dumps(cached[0], indent=2))


def _stamp(t: float) -> str:
    return aws_time(datetime.fromtimestamp(t, UTC))


def _parse_stamp(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class _Handler(ImdsHandler):
    server: _Server

    def answer(self, body: bytes) -> Response:
        return self.server.metadata.answer(self.client_address[0], self.command, self.path,
                                           dict(self.headers.items()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metadata: Metadata


# ---- the account's side, read from moto in this process -------------------------------------------


def moto_lookup(account_id: str, region: str) -> Lookup:
    """``lookup(ip)`` over moto's EC2 instances of that account and region: the instance (not
    terminated) whose private or public address is ``ip``."""

    def lookup(ip: str) -> InstanceFacts | None:
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[account_id][region]
        for reservation in list(backend.reservations.values()):
            for inst in list(reservation.instances):
                if inst._state.name != "terminated" and ip in (inst.private_ip, inst.public_ip):  # noqa: SLF001 - moto's model
                    return instance_facts(backend, inst)
        return None

    return lookup


def instance_facts(backend: Any, inst: Any) -> InstanceFacts:
    """An instance's facts from moto's EC2 backend and IAM (the profile association names the role)."""
    profile_arn = profile_id = role = None
    assoc = backend.iam_instance_profile_associations.get(inst.id)
    if assoc is not None:
        profile = assoc.iam_instance_profile
        profile_arn, profile_id = profile.arn, profile.id
        role = profile.roles[0].name if profile.roles else None
    return InstanceFacts(
        instance_id=inst.id, instance_type=inst.instance_type, az=inst.placement.zone,
        lifecycle="spot" if inst.lifecycle == "spot" else "on-demand", private_ip=inst.private_ip,
        role=role, profile_arn=profile_arn, profile_id=profile_id,
        http_tokens=inst.metadata_options.http_tokens)


def moto_assume_role(account_id: str, region: str, duration_s: int = CREDENTIALS_S) -> AssumeRole:
    """``assume_role(role, instance_id)``: moto's STS AssumeRole of that role, as EC2 does for an
    instance profile (session name = instance id). CannotAssume when the role is gone or its trust
    policy does not name ec2.amazonaws.com."""

    def assume(role_name: str, instance_id: str) -> dict[str, str]:
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends
        from moto.utilities.utils import get_partition

        partition = get_partition(region)
        try:
            role = iam_backends[account_id][partition].get_role(role_name)
        except Exception as e:  # noqa: BLE001 - moto's NoSuchEntity: EC2 answers a Code instead
            raise CannotAssume(f"EC2 cannot find the role {role_name}") from e
        if "ec2.amazonaws.com" not in str(role.assume_role_policy_document):
            raise CannotAssume(f"EC2 cannot assume the role {role_name}. Please see documentation at "
                               "https://docs.aws.amazon.com/IAM/latest/UserGuide/"
                               "id_roles_use_switch-role-ec2.html#roles-usingrole-ec2instance-roles.")
        ar = sts_backends[account_id][partition].assume_role(
            region_name=region, role_session_name=instance_id, role_arn=role.arn, policy="",
            duration=duration_s, external_id="")
        return {"AccessKeyId": ar.access_key_id, "SecretAccessKey": ar.secret_access_key,
                "Token": ar.session_token,
                "Expiration": aws_time(ar.expiration.replace(tzinfo=UTC))}

    return assume
