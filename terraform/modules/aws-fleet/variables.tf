# ---- bucket -----------------------------------------------------------------------

variable "bucket" {
  description = "Name of the fleet bucket to create (S3 naming rules; it must be globally unique)."
  type        = string
}

variable "prefix" {
  description = "Root prefix of the fleet inside the bucket (\"\" for the bucket root). Lets several fleets share a bucket; every policy is scoped to it."
  type        = string
  default     = ""
  nullable    = false
}

variable "force_destroy" {
  description = "Whether `terraform destroy` may delete a bucket that still holds objects (all versions are lost)."
  type        = bool
  default     = false
  nullable    = false
}

variable "public_cache_read" {
  description = "Let anyone read cache/* through a bucket policy (fleet_core::iam::public_cache_policy), so plain `nix copy --from https://BUCKET.s3.REGION.amazonaws.com/PREFIX/cache` works without credentials. Relaxes the bucket's public access block for policies. Only for closures that hold nothing confidential; agents never need it."
  type        = bool
  default     = false
  nullable    = false
}

variable "deny_insecure_transport" {
  description = "Add a bucket policy statement that denies every request not made over TLS."
  type        = bool
  default     = true
  nullable    = false
}

variable "audit_create_only" {
  description = "Add bucket policy statements that make audit/chain/* create-only for everyone: a PUT without If-None-Match and every delete of an audit entry are denied (fleet_core::iam::audit_create_only_policy)."
  type        = bool
  default     = true
  nullable    = false
}

variable "status_event_retention_days" {
  description = "Days after which status/<host>/events/* objects expire (one lifecycle rule per host; status.json itself is kept)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.status_event_retention_days >= 1 && floor(var.status_event_retention_days) == var.status_event_retention_days
    error_message = "status_event_retention_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten object version is kept (manifests, releases, cache). status/ keeps old versions 1 day: status.json is rewritten every heartbeat."
  type        = number
  default     = 90
  nullable    = false

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days must be a whole number of days, at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which unfinished multipart uploads (an interrupted `fleet-publish push` of a large NAR) are aborted and their parts deleted."
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days
    error_message = "abort_incomplete_multipart_days must be a whole number of days, at least 1."
  }
}

# ---- identities -------------------------------------------------------------------

variable "name_prefix" {
  description = "Prefix of every IAM, Lambda and log group name this module creates (e.g. fleet-agent-web-1)."
  type        = string
  default     = "fleet"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9_+=,.@-]{1,32}$", var.name_prefix))
    error_message = "name_prefix must be 1 to 32 characters of A-Z a-z 0-9 _ + = , . @ -."
  }
}

variable "iam_path" {
  description = "IAM path of the roles, users and instance profiles."
  type        = string
  default     = "/fleet/"
  nullable    = false

  validation {
    condition     = can(regex("^/([A-Za-z0-9_+=,.@-]+/)*$", var.iam_path))
    error_message = "iam_path must start and end with / (e.g. \"/fleet/\")."
  }
}

variable "hosts" {
  description = <<-EOT
    The hosts, by name (one DNS label each, as in hosts/<host>/manifest.json), and how
    each gets its credentials:
      "instance-profile" (default): an IAM role and EC2 instance profile; the agent
        gets short-lived credentials from the instance metadata service. For EC2.
      "access-key": an IAM user with an access key, for hosts outside AWS; put the key
        in the agent's environment file (services.fleet-agent.environmentFile).
  EOT
  type = map(object({
    credentials = optional(string, "instance-profile")
  }))
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for h in values(var.hosts) : contains(["instance-profile", "access-key"], h.credentials)])
    error_message = "Each host's credentials must be \"instance-profile\" or \"access-key\"."
  }
}

variable "create_access_keys" {
  description = "Whether Terraform creates the access keys of \"access-key\" hosts (and of the publisher user). The secret keys then live in the Terraform state: keep the state encrypted and access-controlled, or set false and create keys out of band (aws iam create-access-key)."
  type        = bool
  default     = true
  nullable    = false
}

variable "publisher_trusted_principal_arns" {
  description = "IAM principals (role or user ARNs, or account root ARNs) allowed to assume the publisher role, e.g. a CI runner's role."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "publisher_oidc" {
  description = "Let a CI system assume the publisher role through OIDC web identity (e.g. GitHub Actions): the ARN of an existing IAM OIDC provider, the audience, and the allowed subjects (StringLike patterns such as \"repo:org/infra:ref:refs/heads/main\")."
  type = object({
    provider_arn = string
    audience     = optional(string, "sts.amazonaws.com")
    subjects     = list(string)
  })
  default = null
}

variable "publisher_user" {
  description = "Also create an IAM user for the publisher (with an access key if create_access_keys), for CI outside AWS without OIDC."
  type        = bool
  default     = false
  nullable    = false
}

variable "reporter_trusted_principal_arns" {
  description = "IAM principals allowed to assume the reporter role besides Lambda, e.g. to run `fleet-reporter serve` on an admin machine."
  type        = list(string)
  default     = []
  nullable    = false
}

# ---- dashboard (fleet-reporter on Lambda) -----------------------------------------

variable "dashboard_package" {
  description = "Path of a zip file holding the fleet-reporter binary named `bootstrap` (static Linux build for dashboard_architecture). null: no Lambda. See terraform/README.md for building it."
  type        = string
  default     = null
}

variable "dashboard_architecture" {
  description = "Lambda architecture matching the binary in dashboard_package: x86_64 or arm64."
  type        = string
  default     = "x86_64"
  nullable    = false

  validation {
    condition     = contains(["x86_64", "arm64"], var.dashboard_architecture)
    error_message = "dashboard_architecture must be x86_64 or arm64."
  }
}

variable "dashboard_memory_mb" {
  description = "Lambda memory size in MB (CPU scales with it)."
  type        = number
  default     = 256
  nullable    = false
}

variable "dashboard_timeout_seconds" {
  description = "Lambda timeout in seconds."
  type        = number
  default     = 30
  nullable    = false
}

variable "dashboard_reserved_concurrency" {
  description = "Reserved concurrency of the dashboard Lambda: at most this many requests run at once, which bounds its cost under a flood. -1: no reservation (needed on accounts whose concurrency quota is the new-account 10, where nothing can be reserved)."
  type        = number
  default     = 5
  nullable    = false

  validation {
    condition     = var.dashboard_reserved_concurrency == -1 || (var.dashboard_reserved_concurrency >= 1 && floor(var.dashboard_reserved_concurrency) == var.dashboard_reserved_concurrency)
    error_message = "dashboard_reserved_concurrency must be -1 (no reservation) or a whole number >= 1 (0 would disable the function)."
  }
}

variable "dashboard_url_auth" {
  description = "Function URL authorization: \"AWS_IAM\" (callers sign requests with SigV4 and need lambda:InvokeFunctionUrl and lambda:InvokeFunction) or \"NONE\" (public; then set FLEET_REPORTER_TOKEN in dashboard_environment)."
  type        = string
  default     = "AWS_IAM"
  nullable    = false

  validation {
    condition     = contains(["AWS_IAM", "NONE"], var.dashboard_url_auth)
    error_message = "dashboard_url_auth must be AWS_IAM or NONE."
  }
}

variable "dashboard_invoker_arns" {
  description = "With AWS_IAM, principals (role or user ARNs, or account IDs) given permission on the function to call its URL. Principals of this account can instead get lambda:InvokeFunctionUrl and lambda:InvokeFunction in their own policies."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "dashboard_trusted_publisher_keys" {
  description = "Publisher public keys (name:base64) the dashboard verifies manifests with. Without any, it shows manifests as not verified."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "dashboard_environment" {
  description = "More FLEET_REPORTER_* settings for the Lambda, e.g. { FLEET_REPORTER_STALE_AFTER = \"5m\" }. They override the module's own."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "dashboard_log_retention_days" {
  description = "Retention of the Lambda's CloudWatch log group, in days."
  type        = number
  default     = 30
  nullable    = false
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "admin_user" {
  description = "Create an IAM user with the admin policy (trust changes, `retire --purge`, `gc --apply`: it may delete), with an access key if create_access_keys. Give it to operators, not to CI."
  type        = bool
  default     = false
  nullable    = false
}

variable "viewer_user" {
  description = "Create an IAM user with the read-only viewer policy (what the dashboard shows), with an access key if create_access_keys."
  type        = bool
  default     = false
  nullable    = false
}
