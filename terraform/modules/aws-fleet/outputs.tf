output "bucket" {
  description = "Name of the fleet bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the fleet bucket."
  value       = aws_s3_bucket.this.arn
}

output "prefix" {
  description = "Root prefix as used in keys (\"\" or \"a/b/\")."
  value       = local.prefix
}

output "store_url" {
  description = "The fleet store URL for fleet-publish, fleet-agent (services.fleet-agent.store) and fleet-reporter."
  value       = local.store_url
}

output "agent_instance_profiles" {
  description = "Per \"instance-profile\" host, the name of the instance profile to launch its EC2 instance with."
  value       = { for h, p in aws_iam_instance_profile.agent : h => p.name }
}

output "agent_role_arns" {
  description = "Per \"instance-profile\" host, the ARN of its role."
  value       = { for h, r in aws_iam_role.agent : h => r.arn }
}

output "agent_user_names" {
  description = "Per \"access-key\" host, the name of its IAM user."
  value       = { for h, u in aws_iam_user.agent : h => u.name }
}

output "agent_access_key_ids" {
  description = "Per \"access-key\" host, AWS_ACCESS_KEY_ID for its agent's environment file (when create_access_keys)."
  value       = { for h, k in aws_iam_access_key.agent : h => k.id }
}

output "agent_secret_access_keys" {
  description = "Per \"access-key\" host, AWS_SECRET_ACCESS_KEY (when create_access_keys). Read with `terraform output -json agent_secret_access_keys` and move into each host's environment file."
  value       = { for h, k in aws_iam_access_key.agent : h => k.secret }
  sensitive   = true
}

output "publisher_role_arn" {
  description = "ARN of the publisher role (null without trusted principals or OIDC)."
  value       = one(aws_iam_role.publisher[*].arn)
}

output "publisher_access_key_id" {
  description = "Access key ID of the publisher user (null unless publisher_user and create_access_keys)."
  value       = one(aws_iam_access_key.publisher[*].id)
}

output "publisher_secret_access_key" {
  description = "Secret access key of the publisher user."
  value       = one(aws_iam_access_key.publisher[*].secret)
  sensitive   = true
}

output "admin_access_key_id" {
  description = "Access key ID of the admin user (null unless admin_user and create_access_keys)."
  value       = one(aws_iam_access_key.admin[*].id)
}

output "admin_secret_access_key" {
  description = "Secret access key of the admin user."
  value       = one(aws_iam_access_key.admin[*].secret)
  sensitive   = true
}

output "viewer_access_key_id" {
  description = "Access key ID of the viewer user (null unless viewer_user and create_access_keys)."
  value       = one(aws_iam_access_key.viewer[*].id)
}

output "viewer_secret_access_key" {
  description = "Secret access key of the viewer user."
  value       = one(aws_iam_access_key.viewer[*].secret)
  sensitive   = true
}

output "reporter_role_arn" {
  description = "ARN of the reporter role (the Lambda's execution role)."
  value       = aws_iam_role.reporter.arn
}

output "dashboard_function_name" {
  description = "Name of the dashboard Lambda function (null without dashboard_package)."
  value       = one(aws_lambda_function.dashboard[*].function_name)
}

output "dashboard_url" {
  description = "The dashboard's Function URL (null without dashboard_package). With AWS_IAM, requests must be SigV4-signed for service lambda."
  value       = one(aws_lambda_function_url.dashboard[*].function_url)
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
