# The fleet bucket on an on-prem MinIO, with one user per host and users for the
# publisher and the reporter. Every policy is fleet_core::iam's text, rendered by
# ../fleet-policies; MinIO reads AWS IAM policy JSON (arn:aws:s3::: resources,
# s3:prefix conditions) as it is.

module "policies" {
  source = "../fleet-policies"

  bucket                  = var.bucket
  prefix                  = var.prefix
  hosts                   = var.hosts
  public_cache_read       = var.public_cache_read
  deny_insecure_transport = var.deny_insecure_transport
  endpoint                = var.endpoint
  region                  = var.region
}

locals {
  prefix      = module.policies.prefix
  agent_names = { for h in var.hosts : h => "${var.name_prefix}-agent-${h}" }
}

resource "minio_s3_bucket" "this" {
  bucket        = var.bucket
  acl           = "private"
  force_destroy = var.force_destroy
}

resource "minio_s3_bucket_versioning" "this" {
  bucket = minio_s3_bucket.this.bucket

  versioning_configuration {
    status = "Enabled"
  }
}

resource "minio_s3_bucket_server_side_encryption" "this" {
  count = var.server_side_encryption == null ? 0 : 1

  bucket          = minio_s3_bucket.this.bucket
  encryption_type = var.server_side_encryption
  kms_key_id      = var.kms_key_id

  lifecycle {
    precondition {
      condition     = var.server_side_encryption != "aws:kms" || var.kms_key_id != null
      error_message = "server_side_encryption = \"aws:kms\" needs kms_key_id."
    }
  }
}

resource "minio_s3_bucket_policy" "this" {
  count = module.policies.bucket_policy == null ? 0 : 1

  bucket = minio_s3_bucket.this.bucket
  policy = module.policies.bucket_policy
}

resource "minio_ilm_policy" "this" {
  bucket = minio_s3_bucket.this.bucket

  rule {
    # MinIO drops a rule whose only action is aborting uploads, so it shares this
    # one with the noncurrent-version expiry.
    id = "old-versions-and-uploads"

    # Once the expired status events' last versions are gone, their delete markers
    # would stay forever on this versioned bucket: remove them too.
    expired_object_delete_marker = true

    noncurrent_expiration {
      days = "${var.noncurrent_version_retention_days}d"
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = "${var.abort_incomplete_multipart_days}d"
    }
  }

  rule {
    # status.json is rewritten every heartbeat: its old versions are worthless
    # after a day.
    id     = "status-old-versions"
    filter = "${local.prefix}status/"

    noncurrent_expiration {
      days = "1d"
    }
  }

  rule {
    # Change-feed markers are hints read within minutes; the reporter lists the
    # whole fleet at least every 10 minutes anyway.
    id         = "change-feed-markers"
    filter     = "${local.prefix}changes/"
    expiration = "1d"
  }

  # Prefix filters only, so status/*/events/ takes one rule per host;
  # status/<host>/status.json is never expired.
  dynamic "rule" {
    for_each = module.policies.status_events_prefixes

    content {
      id         = "status-events-${rule.key}"
      filter     = rule.value
      expiration = "${var.status_event_retention_days}d"
    }
  }

  depends_on = [minio_s3_bucket_versioning.this]
}

# ---- agents -----------------------------------------------------------------------

resource "minio_iam_user" "agent" {
  for_each = var.hosts

  # The provider generates the secret key; it is kept in the Terraform state.
  name = local.agent_names[each.key]
}

resource "minio_iam_policy" "agent" {
  for_each = var.hosts

  name   = local.agent_names[each.key]
  policy = module.policies.agent[each.key]
}

resource "minio_iam_user_policy_attachment" "agent" {
  for_each = var.hosts

  user_name   = minio_iam_user.agent[each.key].name
  policy_name = minio_iam_policy.agent[each.key].name
}

# ---- publisher and reporter -------------------------------------------------------

resource "minio_iam_user" "publisher" {
  name = "${var.name_prefix}-publisher"
}

resource "minio_iam_policy" "publisher" {
  name   = "${var.name_prefix}-publisher"
  policy = module.policies.publisher
}

resource "minio_iam_user_policy_attachment" "publisher" {
  user_name   = minio_iam_user.publisher.name
  policy_name = minio_iam_policy.publisher.name
}

resource "minio_iam_user" "reporter" {
  name = "${var.name_prefix}-reporter"
}

resource "minio_iam_policy" "reporter" {
  name   = "${var.name_prefix}-reporter"
  policy = module.policies.reporter
}

resource "minio_iam_user_policy_attachment" "reporter" {
  user_name   = minio_iam_user.reporter.name
  policy_name = minio_iam_policy.reporter.name
}

# ---- admin and viewer (optional) --------------------------------------------------

resource "minio_iam_user" "admin" {
  count = var.admin_user ? 1 : 0

  name = "${var.name_prefix}-admin"
}

resource "minio_iam_policy" "admin" {
  count = length(minio_iam_user.admin)

  name   = "${var.name_prefix}-admin"
  policy = module.policies.admin
}

resource "minio_iam_user_policy_attachment" "admin" {
  count = length(minio_iam_user.admin)

  user_name   = minio_iam_user.admin[0].name
  policy_name = minio_iam_policy.admin[0].name
}

resource "minio_iam_user" "viewer" {
  count = var.viewer_user ? 1 : 0

  name = "${var.name_prefix}-viewer"
}

resource "minio_iam_policy" "viewer" {
  count = length(minio_iam_user.viewer)

  name   = "${var.name_prefix}-viewer"
  policy = module.policies.viewer
}

resource "minio_iam_user_policy_attachment" "viewer" {
  count = length(minio_iam_user.viewer)

  user_name   = minio_iam_user.viewer[0].name
  policy_name = minio_iam_policy.viewer[0].name
}
