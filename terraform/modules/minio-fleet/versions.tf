terraform {
  required_version = ">= 1.5"

  required_providers {
    minio = {
      # The community provider; 3.20 is the first whose
      # minio_s3_bucket_server_side_encryption takes AES256 without a KMS key
      # (checked against its schema by tests/tests/terraform_schema.rs).
      source  = "aminueza/minio"
      version = ">= 3.20, < 4.0"
    }
  }
}
