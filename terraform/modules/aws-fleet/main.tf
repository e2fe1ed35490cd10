# The fleet bucket on AWS S3: versioned, encrypted, private unless
# public_cache_read, with lifecycle rules for status events, old versions and
# abandoned multipart uploads.

module "policies" {
  source = "../fleet-policies"

  bucket                  = var.bucket
  prefix                  = var.prefix
  hosts                   = keys(var.hosts)
  public_cache_read       = var.public_cache_read
  deny_insecure_transport = var.deny_insecure_transport
  audit_create_only       = var.audit_create_only
  region                  = aws_s3_bucket.this.region
}

locals {
  prefix    = module.policies.prefix
  store_url = module.policies.store_url
}

resource "aws_s3_bucket" "this" {
  bucket        = var.bucket
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    # ACLs off: access is decided by IAM and the bucket policy alone.
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls  = true
  ignore_public_acls = true
  # Only the public-read policy on cache/* may make anything public.
  block_public_policy     = !var.public_cache_read
  restrict_public_buckets = !var.public_cache_read
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    # Old manifests and cache objects stay recoverable after an overwrite; the
    # lifecycle rules below bound what that costs.
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    # SSE-S3. SSE-KMS would need kms:Decrypt / kms:GenerateDataKey for every role,
    # which fleet's policies (one text for AWS, MinIO and the tests) do not grant.
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  count = module.policies.bucket_policy == null ? 0 : 1

  bucket = aws_s3_bucket.this.id
  policy = module.policies.bucket_policy

  # A public policy is refused while the public access block still blocks it.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "old-versions-and-uploads"
    status = "Enabled"

    # Only the fleet's own keys, not the rest of a shared bucket.
    filter {
      prefix = local.prefix
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    # status.json is rewritten every heartbeat (2 minutes by default): its old
    # versions are worthless after a day.
    id     = "status-old-versions"
    status = "Enabled"

    filter {
      prefix = "${local.prefix}status/"
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    # Change-feed markers are hints read within minutes of being written; the
    # reporter lists the whole fleet at least every 10 minutes anyway.
    id     = "change-feed-markers"
    status = "Enabled"

    filter {
      prefix = "${local.prefix}changes/"
    }

    expiration {
      days = 1
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # S3 lifecycle filters match key prefixes, not patterns, so status/*/events/ takes
  # one rule per host. status/<host>/status.json is never expired: a host that went
  # silent must stay visible on the dashboard.
  dynamic "rule" {
    for_each = module.policies.status_events_prefixes

    content {
      id     = "status-events-${rule.key}"
      status = "Enabled"

      filter {
        prefix = rule.value
      }

      expiration {
        days = var.status_event_retention_days
      }
    }
  }

  lifecycle {
    precondition {
      # A bucket holds at most 1000 lifecycle rules.
      condition     = length(var.hosts) <= 997
      error_message = "More than 997 hosts do not fit in one bucket's lifecycle configuration (one rule per host for status events): split the fleet across prefixes in several buckets, or manage event expiry outside this module."
    }
  }

  # Lifecycle rules on noncurrent versions need versioning first.
  depends_on = [aws_s3_bucket_versioning.this]
}
