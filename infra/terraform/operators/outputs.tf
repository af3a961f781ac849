output "trainee_policy_arns" {
  description = "The trainee's managed policies (both are attached to every trainee role)."
  value       = [for p in aws_iam_policy.trainee : p.arn]
}

output "instructor_policy_arn" {
  description = "The instructor's managed policy."
  value       = aws_iam_policy.instructor.arn
}

output "trainee_role_arns" {
  description = "Lab id -> the role its trainee assumes to run raylab --lab <lab id>."
  value       = { for lab, r in aws_iam_role.trainee : lab => r.arn }
}

output "instructor_role_arn" {
  value = aws_iam_role.instructor.arn
}
