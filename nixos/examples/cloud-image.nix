# The fleet part of a cloud image (EC2) from which many hosts boot: the agent is in
# the image, its bucket credentials come from the instance profile (no key on
# disk), and the host's fleet name comes from the instance's user data at boot, so
# one image serves every host. docs/first-boot.md shows the whole flow.
#
# Use it with nixpkgs' image module, e.g. in a flake:
#
#   nixosConfigurations.fleet-image = nixpkgs.lib.nixosSystem {
#     system = "x86_64-linux";
#     modules = [
#       "${nixpkgs}/nixos/modules/virtualisation/amazon-image.nix"
#       fleet.nixosModules.default
#       ./cloud-image.nix
#     ];
#   };
#
# User data of an instance: one line `FLEET_AGENT_HOST=web-7` (the name its IAM
# role was made for by terraform/modules/aws-fleet). tests/tests/nixos_eval.rs
# evaluates this file with the fleet modules.
{ lib, ... }:

let
  # Written at boot from the user data; the agent reads it as environment, which
  # takes precedence over the placeholder `host` in /etc/fleet/agent.toml.
  identity = "/run/fleet-agent/identity.env";
in
{
  services.fleet-agent = {
    enable = true;
    # terraform output store_url
    bucket = "s3://example-fleet-prod/prod?region=eu-west-1";
    # Replaced at boot by FLEET_AGENT_HOST from the user data (see above); a valid
    # name so the module's assertion holds, and one no IAM role is made for, so a
    # host without user data reports access-denied instead of acting as another.
    host = "unassigned";
    trustedPublisherKeys = [ "publisher-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI=" ];
    trustedCacheKeys = [ "cache-1:5kA3qW3D1Wq5uYk4uV2uQv9D5b0mYcJQ0l7cGfQzq4Y=" ];
    # No environmentFile for credentials: on EC2 the agent asks the instance
    # metadata service for the instance profile's (terraform output
    # instance_profiles).
    environmentFile = identity;
  };

  # The host name from the user data, before the agent starts. amazon-image.nix's
  # fetch-ec2-metadata puts the user data in /etc/ec2-metadata/user-data.
  systemd.services.fleet-agent-identity = {
    description = "fleet agent: this instance's fleet host name from its user data";
    wantedBy = [ "fleet-agent.service" ];
    before = [ "fleet-agent.service" ];
    after = [ "fetch-ec2-metadata.service" ];
    wants = [ "fetch-ec2-metadata.service" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      RuntimeDirectory = "fleet-agent";
      RuntimeDirectoryPreserve = true;
      ExecStart = lib.concatStringsSep " " [
        "/bin/sh -c"
        "'grep -E \"^FLEET_AGENT_HOST=[a-z0-9-]+$\" /etc/ec2-metadata/user-data > ${identity} || true'"
      ];
    };
  };
  systemd.services.fleet-agent = {
    requires = [ "fleet-agent-identity.service" ];
    after = [ "fleet-agent-identity.service" ];
  };
}
