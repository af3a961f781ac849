"""The local target's IMDSv2 server: the logic is the AWS piece's (``raylab.aws.imds_server``), shared
with the rehearsal; this module keeps the names the local target and its tests import."""

from raylab.aws.imds_server import (  # noqa: F401 - re-exported
    ACTIONS,
    CONTROL_PREFIX,
    MAX_TTL,
    TOKEN_HEADER,
    TOKEN_TTL_HEADER,
    ImdsServer,
    InstanceMetadata,
    MetadataStore,
    Response,
    aws_time,
    handle,
    handle_control,
)
