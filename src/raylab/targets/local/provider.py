"""The Ray-side node provider of the local target: Ray's own AWSNodeProvider, loopback only.

Loaded by the head's autoscaler (v2 wraps it in ``NodeProviderAdapter``) through
``provider: {type: external, module: raylab.targets.local.provider.LocalAWSNodeProvider}``.
It changes one thing: before any boto3 client exists, it refuses an endpoint that is not on
127.0.0.0/8, so a lab cluster can never launch real instances by accident. Starting and stopping the
local Ray node of an instance is the twin's job (its machines follow the instance state), exactly
as AWS boots a VM: nothing here blocks the autoscaler's reconcile loop.
"""

from __future__ import annotations

import os
from typing import Any

from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

from raylab.cluster.local_form import is_loopback_url


class LoopbackOnlyError(RuntimeError):
    pass


def loopback_endpoint(provider_config: dict[str, Any], environ: dict[str, str]) -> str:
    """The endpoint this provider may use, or LoopbackOnlyError (pure: unit-tested)."""
    creds = provider_config.get("aws_credentials") or {}
    url = (provider_config.get("endpoint_url") or creds.get("endpoint_url")
           or environ.get("AWS_ENDPOINT_URL_EC2") or environ.get("AWS_ENDPOINT_URL"))
    if not url:
        raise LoopbackOnlyError(
            "raylab's local provider needs provider.endpoint_url (or AWS_ENDPOINT_URL) pointing at the twin "
            "on 127.0.0.1; refusing to talk to real AWS")
    if not is_loopback_url(url):
        raise LoopbackOnlyError(
            f"raylab's local provider refuses endpoint {url!r}: only 127.0.0.0/8 is allowed")
    return url


class LocalAWSNodeProvider(AWSNodeProvider):
    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        url = loopback_endpoint(provider_config, dict(os.environ))
        cfg = dict(provider_config)
        # endpoint only: the keys come from the head's environment, never from the YAML
        cfg["aws_credentials"] = {**(provider_config.get("aws_credentials") or {}), "endpoint_url": url}
        super().__init__(cfg, cluster_name)
