variable "bucket" {
  description = "Name of the fleet bucket to create."
  type        = string
}

variable "prefix" {
  description = "Root prefix of the fleet inside the bucket (\"\" for the bucket root)."
  type        = string
  default     = ""
  nullable    = false
}

variable "endpoint" {
  description = "The MinIO server as hosts and CI reach it, e.g. \"https://minio.example.net:9000\"; only used in the store_url output (the provider has its own minio_server setting)."
  type        = string
}

variable "region" {
  description = "Region the MinIO server is configured with (MINIO_REGION / `mc admin config get ALIAS region`)."
  type        = string
  default     = "us-east-1"
  nullable    = false
}

variable "hosts" {
  description = "Names of the hosts (one DNS label each); each gets a MinIO user whose policy is fleet's agent policy for that host."
  type        = set(string)
  default     = []
  nullable    = false
}

variable "name_prefix" {
  description = "Prefix of the user and policy names (e.g. fleet-agent-web-1, fleet-publisher). The user name is the access key ID."
  type        = string
  default     = "fleet"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,32}$", var.name_prefix))
    error_message = "name_prefix must be 1 to 32 characters of A-Z a-z 0-9 _ . -."
  }
}

variable "force_destroy" {
  description = "Whether `terraform destroy` may delete a bucket that still holds objects."
  type        = bool
  default     = false
  nullable    = false
}

variable "public_cache_read" {
  description = "Let anonymous clients read cache/* (fleet_core::iam::public_cache_policy as the bucket policy), for plain `nix copy --from http(s)://…/cache`. Only for closures that hold nothing confidential."
  type        = bool
  default     = false
  nullable    = false
}

variable "deny_insecure_transport" {
  description = "Add a bucket policy statement that denies requests not made over TLS. Leave false for a plain-HTTP MinIO on a private network."
  type        = bool
  default     = false
  nullable    = false
}

variable "server_side_encryption" {
  description = "Default encryption of the bucket: null (none), \"AES256\" (SSE-S3) or \"aws:kms\" (SSE-KMS with kms_key_id). Both need a KMS (KES) configured on the MinIO server."
  type        = string
  default     = null

  validation {
    condition     = var.server_side_encryption == null || contains(["AES256", "aws:kms"], coalesce(var.server_side_encryption, "none"))
    error_message = "server_side_encryption must be null, \"AES256\" or \"aws:kms\"."
  }
}

variable "kms_key_id" {
  description = "KMS key name for server_side_encryption = \"aws:kms\"."
  type        = string
  default     = null
}

variable "status_event_retention_days" {
  description = "Days after which status/<host>/events/* objects expire (one lifecycle rule per host)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.status_event_retention_days >= 1 && floor(var.status_event_retention_days) == var.status_event_retention_days
    error_message = "status_event_retention_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten object version is kept (status/ keeps them 1 day)."
  type        = number
  default     = 90
  nullable    = false

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days must be a whole number of days, at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which unfinished multipart uploads are aborted."
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days
    error_message = "abort_incomplete_multipart_days must be a whole number of days, at least 1."
  }
}

variable "admin_user" {
  description = "Create a MinIO user with the admin policy (trust changes, `retire --purge`, `gc --apply`: it may delete). Give it to operators, not to CI."
  type        = bool
  default     = false
  nullable    = false
}

variable "viewer_user" {
  description = "Create a MinIO user with the read-only viewer policy (what the dashboard shows)."
  type        = bool
  default     = false
  nullable    = false
}
