"""The local config form now lives in ``raylab.cluster.local_form`` (a piece: ``cluster.config`` renders
through it without importing a target); these names stay importable from here for the local target."""

from raylab.cluster.local_form import (  # noqa: F401 - re-exported for the local target's modules
    PLACEHOLDER_AMI,
    PROVIDER_MODULE,
    instance_shape,
    is_loopback_url,
    require_loopback,
    scaled_resources,
    to_local,
    validate,
)
