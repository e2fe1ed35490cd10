# The fleet part of an on-prem host (a machine in a branch office, behind NAT): the
# bucket is a MinIO or SeaweedFS on the site's network or an S3 bucket, the host's
# access key (terraform/modules/minio-fleet's agent_access_key_ids and
# agent_secret_access_keys, or `aws iam create-access-key`) sits in a root-only file
# that never enters the Nix store. docs/first-boot.md shows the whole flow;
# tests/tests/nixos_eval.rs evaluates this file with the fleet modules.
#
# Use it in the host's configuration (its nixos-install, then every later system
# fleet-publish deploys for it must import it too):
#
#   imports = [ fleet.nixosModules.default ./on-prem.nix ];
{
  networking.hostName = "kiosk-17"; # the fleet name: one DNS label, lower case

  services.fleet-agent = {
    enable = true;
    # terraform output store_url
    bucket = "s3://fleet-prod?endpoint=https://minio.site.lan:9000&region=us-east-1";
    # host defaults to networking.hostName (lower-cased)
    trustedPublisherKeys = [ "publisher-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI=" ];
    trustedCacheKeys = [ "cache-1:5kA3qW3D1Wq5uYk4uV2uQv9D5b0mYcJQ0l7cGfQzq4Y=" ];
    # AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=…, mode 0600, put there by
    # hand at install time (or by agenix / sops-nix): a string, not a Nix path.
    environmentFile = "/var/lib/fleet-agent-credentials.env";
    # A kiosk on a slow line: poll less, and roll back unless the app answers.
    pollInterval = 300;
    healthChecks = [
      { systemdUnit = "display-manager.service"; }
      { http = "http://127.0.0.1:8080/healthz"; timeout = 60; }
    ];
  };
}
