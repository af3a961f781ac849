"""boto3 clients built from the target's environment (one source of truth for the endpoint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylab.context import Context

DEFAULT_REGION = "us-west-2"  # where s3://ray-example-data lives


def client(ctx: Context, service: str) -> Any:
    import boto3
    from botocore.config import Config

    env = ctx.target.aws_env(ctx)
    kwargs: dict[str, Any] = {"region_name": env.get("AWS_DEFAULT_REGION", DEFAULT_REGION)}
    if env.get("AWS_ENDPOINT_URL"):
        kwargs["endpoint_url"] = env["AWS_ENDPOINT_URL"]
    if env.get("AWS_ACCESS_KEY_ID"):
        kwargs["aws_access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        kwargs["aws_secret_access_key"] = env.get("AWS_SECRET_ACCESS_KEY")
    cfg = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)
    return boto3.client(service, config=cfg, **kwargs)
