# Example: a fleet on an on-prem MinIO. The provider's credentials come from the
# environment (MINIO_USER, MINIO_PASSWORD); hosts get their keys from the outputs.

terraform {
  required_version = ">= 1.5"

  required_providers {
    minio = {
      source  = "aminueza/minio"
      version = ">= 3.20, < 4.0"
    }
  }
}

provider "minio" {
  minio_server = "minio.example.internal:9000"
  minio_ssl    = true
}

module "fleet" {
  source = "../../modules/minio-fleet"

  bucket   = "fleet"
  endpoint = "https://minio.example.internal:9000"
  hosts    = ["edge-1", "edge-2"]
}

output "store_url" {
  value = module.fleet.store_url
}

output "agent_access_key_ids" {
  value = module.fleet.agent_access_key_ids
}
