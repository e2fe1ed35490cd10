terraform {
  required_version = ">= 1.5"

  required_providers {
    minio = {
      # The community provider; 3.10 added abort_incomplete_multipart_upload to
      # lifecycle rules.
      source  = "aminueza/minio"
      version = ">= 3.10, < 4.0"
    }
  }
}
