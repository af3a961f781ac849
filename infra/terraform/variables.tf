variable "lab_id" {
  description = "Lab id carried by every resource (tag raylab-lab); a-z, 0-9, '-', at most 20 chars."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.lab_id))
    error_message = "lab_id: 1-20 chars of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "cluster_name" {
  description = "Ray cluster name; Ray tags its instances ray-cluster-name=<cluster_name>."
  type        = string
}

variable "region" {
  description = "AWS region of the lab."
  type        = string
  default     = "us-west-2"
}

variable "endpoint_url" {
  description = "Endpoint for IAM/STS/EC2 (raylab's local twin, e.g. http://127.0.0.1:PORT). Empty on AWS."
  type        = string
  default     = ""
}

variable "data_bucket" {
  description = "S3 bucket the workers read in the data stage."
  type        = string
  default     = "ray-example-data"
}
