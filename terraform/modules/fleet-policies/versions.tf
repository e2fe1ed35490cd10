terraform {
  # `check` blocks and strcontains() need 1.5. This module has no providers, so it
  # can be planned and applied offline (tests/tests/infra.rs does).
  required_version = ">= 1.5"
}
