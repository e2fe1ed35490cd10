output "prefix" {
  description = "The root prefix as fleet uses it in keys: \"\" or \"a/b/\"."
  value       = local.prefix
}

output "agent" {
  description = "Agent policy JSON per host name (fleet-publish policy --role agent --host H)."
  value       = local.agent
}

output "publisher" {
  description = "Publisher policy JSON (fleet-publish policy --role publisher)."
  value       = local.publisher
}

output "reporter" {
  description = "Reporter policy JSON (fleet-publish policy --role reporter)."
  value       = local.reporter
}

output "admin" {
  description = "Admin policy JSON (fleet-publish policy --role admin): the publisher's rights plus trust/, registry/ and deletes (retire --purge, gc --apply)."
  value       = local.admin
}

output "viewer" {
  description = "Viewer policy JSON (fleet-publish policy --role viewer): read-only access to what the dashboard shows."
  value       = local.viewer
}

output "public_cache" {
  description = "Public-read bucket policy for cache/* (fleet_core::iam::public_cache_policy), whether or not it is enabled."
  value       = local.public_cache
}

output "audit_create_only" {
  description = "Create-only bucket policy for audit/chain/* (fleet_core::iam::audit_create_only_policy), whether or not it is enabled."
  value       = local.audit_create_only
}

output "bucket_policy" {
  description = "The bucket policy to attach: public cache read, TLS-only and/or create-only audit, or null when none is asked for."
  value       = local.bucket_policy
}

output "status_events_prefixes" {
  description = "Per host, the key prefix of its status events (PREFIX/status/HOST/events/), for lifecycle rules."
  value       = { for h in var.hosts : h => "${local.prefix}status/${h}/events/" }
}

output "store_url" {
  description = "The store URL for fleet-publish, fleet-agent and fleet-reporter: s3://BUCKET[/PREFIX][?endpoint=…&region=…]."
  value       = local.store_url
}
