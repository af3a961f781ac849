# raylab stage 2 "identity": the IAM the Ray cluster runs with.
#
# - Head: role raylab-<lab>-ray-head + instance profile ray-instance-profile-<lab>. Its inline
#   policy (policies/head-policy.json.tftpl) is least privilege for Ray's AWS node provider:
#   a few ec2:Describe* calls (which cannot be scoped), RunInstances only for instances tagged
#   ray-cluster-name=<cluster_name>, Terminate/Stop/Start only on instances carrying that tag,
#   CreateTags at launch or on the cluster's instances, and iam:PassRole only for the worker
#   role and only to ec2.amazonaws.com. No "*" action, no unconditioned "*" on a mutating action.
# - Workers: role raylab-<lab>-ray-worker + profile ray-worker-profile-<lab> with S3 read of
#   the data bucket (s3://ray-example-data, Common Voice 17) and nothing else.
#
# raylab runs this with the real `terraform` binary (src/raylab/iac/terraform.py): one state
# directory per lab under .raylab/terraform/<lab>/, providers from a local filesystem mirror,
# credentials only through the environment. On the local target (and in the AWS rehearsal)
# `endpoint_url` is the twin's URL on 127.0.0.1, and the provider reaches it through the
# AWS_ENDPOINT_URL environment variable raylab sets to the same URL (every service, and no
# per-service override left in that environment: iac/terraform.py). There is no `endpoints`
# block: the provider validates that block's hundreds of attributes on every configuration, about
# 2.2 CPU-seconds a time, three times per apply (apply: 3.8 s instead of 10.9 s, measured). On AWS
# `endpoint_url` is empty and the provider behaves normally.
# The policy tests (tests/unit/test_iac_gates.py) parse the same JSON templates used here.

locals {
  local_endpoint = var.endpoint_url != ""
  tags           = { "raylab-lab" = var.lab_id }
  head_role      = "raylab-${var.lab_id}-ray-head"
  worker_role    = "raylab-${var.lab_id}-ray-worker"
}

provider "aws" {
  region = var.region

  # Only against the local twin: it has no real credentials, metadata service or account.
  skip_credentials_validation = local.local_endpoint
  skip_metadata_api_check     = local.local_endpoint
  skip_requesting_account_id  = local.local_endpoint

  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    sid     = "Ec2AssumesRole"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# --- workers ---------------------------------------------------------------------------
resource "aws_iam_role" "worker" {
  name               = local.worker_role
  description        = "raylab ${var.lab_id}: Ray worker nodes (S3 read of the data bucket)"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "worker" {
  name = "${local.worker_role}-s3-read"
  role = aws_iam_role.worker.id
  policy = templatefile("${path.module}/policies/worker-policy.json.tftpl", {
    partition = data.aws_partition.current.partition
    bucket    = var.data_bucket
  })
}

resource "aws_iam_instance_profile" "worker" {
  name = "ray-worker-profile-${var.lab_id}"
  role = aws_iam_role.worker.name
}

# --- head --------------------------------------------------------------------------------
resource "aws_iam_role" "head" {
  name               = local.head_role
  description        = "raylab ${var.lab_id}: Ray head node (the autoscaler launches and ends workers)"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "head" {
  name = "${local.head_role}-autoscaler"
  role = aws_iam_role.head.id
  policy = templatefile("${path.module}/policies/head-policy.json.tftpl", {
    partition       = data.aws_partition.current.partition
    region          = var.region
    account_id      = data.aws_caller_identity.current.account_id
    cluster_name    = var.cluster_name
    worker_role_arn = aws_iam_role.worker.arn
  })
}

resource "aws_iam_instance_profile" "head" {
  name = "ray-instance-profile-${var.lab_id}"
  role = aws_iam_role.head.name
}
