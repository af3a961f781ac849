output "head_instance_profile_name" {
  value = aws_iam_instance_profile.head.name
}

output "head_instance_profile_arn" {
  value = aws_iam_instance_profile.head.arn
}

output "head_role_arn" {
  value = aws_iam_role.head.arn
}

output "worker_instance_profile_name" {
  value = aws_iam_instance_profile.worker.name
}

output "worker_instance_profile_arn" {
  value = aws_iam_instance_profile.worker.arn
}

output "worker_role_arn" {
  value = aws_iam_role.worker.arn
}
