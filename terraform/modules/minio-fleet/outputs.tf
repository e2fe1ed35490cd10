output "bucket" {
  description = "Name of the fleet bucket."
  value       = minio_s3_bucket.this.bucket
}

output "prefix" {
  description = "Root prefix as used in keys (\"\" or \"a/b/\")."
  value       = local.prefix
}

output "store_url" {
  description = "The fleet store URL (s3://BUCKET[/PREFIX]?endpoint=…&region=…) for fleet-publish, fleet-agent and fleet-reporter."
  value       = module.policies.store_url
}

output "agent_access_key_ids" {
  description = "Per host, AWS_ACCESS_KEY_ID for its agent's environment file (the MinIO user name)."
  value       = { for h, u in minio_iam_user.agent : h => u.name }
}

output "agent_secret_access_keys" {
  description = "Per host, AWS_SECRET_ACCESS_KEY for its agent's environment file. Read with `terraform output -json agent_secret_access_keys`."
  value       = { for h, u in minio_iam_user.agent : h => u.secret }
  sensitive   = true
}

output "publisher_access_key_id" {
  description = "Access key ID of the publisher user."
  value       = minio_iam_user.publisher.name
}

output "publisher_secret_access_key" {
  description = "Secret key of the publisher user."
  value       = minio_iam_user.publisher.secret
  sensitive   = true
}

output "reporter_access_key_id" {
  description = "Access key ID of the reporter user."
  value       = minio_iam_user.reporter.name
}

output "reporter_secret_access_key" {
  description = "Secret key of the reporter user."
  value       = minio_iam_user.reporter.secret
  sensitive   = true
}

output "admin_access_key_id" {
  description = "Access key ID of the admin user (null unless admin_user)."
  value       = one(minio_iam_user.admin[*].name)
}

output "admin_secret_access_key" {
  description = "Secret key of the admin user."
  value       = one(minio_iam_user.admin[*].secret)
  sensitive   = true
}

output "viewer_access_key_id" {
  description = "Access key ID of the viewer user (null unless viewer_user)."
  value       = one(minio_iam_user.viewer[*].name)
}

output "viewer_secret_access_key" {
  description = "Secret key of the viewer user."
  value       = one(minio_iam_user.viewer[*].secret)
  sensitive   = true
}

output "policies" {
  description = "The policy documents deployed, for review (identical to `fleet-publish policy` output)."
  value = {
    agent     = module.policies.agent
    publisher = module.policies.publisher
    reporter  = module.policies.reporter
    admin     = module.policies.admin
    viewer    = module.policies.viewer
    bucket    = module.policies.bucket_policy
  }
}
