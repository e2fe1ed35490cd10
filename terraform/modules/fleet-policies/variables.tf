variable "bucket" {
  description = "Name of the fleet bucket (S3 naming rules: 3-63 characters of a-z 0-9 . -, starting and ending with a letter or digit)."
  type        = string

  validation {
    # Mirrors fleet_core::iam::validate_bucket.
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket)) && !strcontains(var.bucket, "..")
    error_message = "The bucket name must be 3 to 63 characters of a-z 0-9 . - starting and ending with a letter or digit, without \"..\"."
  }
}

variable "prefix" {
  description = "Root prefix of the fleet inside the bucket (\"\" for the bucket root, or e.g. \"site-a\"); leading and trailing slashes are ignored."
  type        = string
  default     = ""
  nullable    = false

  validation {
    # Mirrors fleet_core::iam::normalize_prefix: no wildcards, no `..`, no empty segment.
    condition = trim(var.prefix, "/") == "" || alltrue([
      for seg in split("/", trim(var.prefix, "/")) :
      can(regex("^[A-Za-z0-9._-]+$", seg)) && seg != "." && seg != ".."
    ])
    error_message = "The prefix must be /-separated segments of A-Z a-z 0-9 . _ - (no \"..\", no \".\", no empty segment, no wildcards)."
  }
}

variable "hosts" {
  description = "Names of the hosts that get an agent policy (each one DNS label: a-z 0-9 -, 1-63 characters, no leading or trailing -)."
  type        = set(string)
  default     = []
  nullable    = false

  validation {
    # Mirrors fleet_core::HostName::new.
    condition     = alltrue([for h in var.hosts : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", h))])
    error_message = "Every host name must be one DNS label: 1 to 63 characters of lowercase a-z, 0-9 and -, not starting or ending with -."
  }
}

variable "public_cache_read" {
  description = "Whether the bucket policy lets anyone read cache/* (fleet_core::iam::public_cache_policy), so plain `nix copy --from https://…/cache` works without credentials. Only for closures that hold nothing confidential."
  type        = bool
  default     = false
  nullable    = false
}

variable "deny_insecure_transport" {
  description = "Whether the bucket policy denies every request not made over TLS (condition aws:SecureTransport = false)."
  type        = bool
  default     = false
  nullable    = false
}

variable "audit_create_only" {
  description = "Whether the bucket policy makes audit/chain/* create-only for everyone (fleet_core::iam::audit_create_only_policy: PUT without If-None-Match and deletes denied). AWS S3 only: SeaweedFS lacks the s3:if-none-match condition key and would refuse every audit write."
  type        = bool
  default     = false
  nullable    = false
}

variable "region" {
  description = "Region for the store URL output (null: none in the URL)."
  type        = string
  default     = null
}

variable "endpoint" {
  description = "S3 endpoint for the store URL output, for servers other than AWS (e.g. \"https://minio.example.net:9000\"; null for AWS)."
  type        = string
  default     = null

  validation {
    condition     = var.endpoint == null || can(regex("^https?://[^/?#&\\s]+/?$", var.endpoint))
    error_message = "The endpoint must be http(s)://HOST[:PORT] with nothing after it."
  }
}
