variable "region" {
  description = "AWS region of the room (the policies allow raylab's resources in this region only)."
  type        = string
  default     = "us-west-2"
}

variable "name_prefix" {
  description = "Prefix of the policy and group names."
  type        = string
  default     = "raylab-room"
}

variable "trainees" {
  description = "Lab id -> the one principal ARN (a trainee's IAM user or SSO role) that may assume that lab's trainee role. The role carries the tag raylab-lab=<lab id>, which the trainee policy reads."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for lab in keys(var.trainees) : can(regex("^[a-z][a-z0-9-]{0,19}$", lab))])
    error_message = "each lab id: 1-20 chars of a-z, 0-9 and '-', starting with a letter (as raylab --lab)."
  }
  validation {
    condition     = alltrue([for p in values(var.trainees) : can(regex("^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:", p)) && !endswith(p, ":root")])
    error_message = "each trainee principal must be one IAM/STS principal ARN (no '*', no account root alias)."
  }
}

variable "instructors" {
  description = "Principal ARNs that may assume the instructor role (default: whoever applies this)."
  type        = set(string)
  default     = []
}
