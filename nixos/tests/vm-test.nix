# NixOS VM test: a MinIO server with fleet-publish (node `publisher`) and a host
# running services.fleet-agent (node `agent`). The publisher sets up the bucket and
# per-role MinIO users with the policies `fleet-publish policy` prints (the text the
# Terraform modules deploy), then deploys two manifests; the agent follows both:
#
#   1. a small closure the agent does not have (activation `test`): the agent must
#      fetch it from the bucket's cache, import it and run its switch-to-configuration;
#   2. a real NixOS system, the agent's own specialisation `next` (activation
#      `switch`): the agent switches the host to it and passes its health check.
#
# After each, the agent's status object in the bucket must say `healthy` for the
# right sequence.
#
# NOT RUN YET: written and parse-checked on machines without nixpkgs or KVM
# (`nix-instantiate --parse`, tests/tests/infra.rs). Run it with
# `nix build .#checks.x86_64-linux.vm-test -L`.
{ pkgs, fleetModule, fleetPackages }:

let
  # The example key pair published in docs/formats.md (never use it for anything
  # real). Here it signs both the manifests and the narinfos.
  signingSecret = "publisher-1:DWpoBYLq5XorECKQnfQEAHG5Ad1YwEjkeV45L9B+bJrWA23wc4dqJHqEWHgQ75/ySphseuCyvdWqdpJNj8zdEg==";
  signingPublic = "publisher-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI=";

  # Test credentials. Real ones never go into the Nix store: services.fleet-agent
  # takes an environment file path for that reason.
  minioRoot = { user = "fleetadmin"; password = "fleetadmin-secret-0123"; };
  agentCreds = { id = "fleet-agent-agent"; secret = "agent-secret-key-0123"; };
  publisherCreds = { id = "fleet-publisher"; secret = "publisher-secret-key-0123"; };

  store = "s3://fleet?endpoint=http://publisher:9000&region=us-east-1";

  # Stand-in system for step 1: only what the agent runs. It records its argument.
  fakeSystem = pkgs.writeTextFile {
    name = "fleet-vm-test-fake-system";
    destination = "/bin/switch-to-configuration";
    executable = true;
    text = ''
      #!${pkgs.runtimeShell}
      echo "$1" > /run/fleet-fake-switch
    '';
  };
in
pkgs.testers.runNixOSTest {
  name = "fleet";

  nodes.publisher = { nodes, pkgs, ... }: {
    services.minio = {
      enable = true;
      region = "us-east-1";
      rootCredentialsFile = pkgs.writeText "minio-root-credentials" ''
        MINIO_ROOT_USER=${minioRoot.user}
        MINIO_ROOT_PASSWORD=${minioRoot.password}
      '';
    };
    networking.firewall.allowedTCPPorts = [ 9000 ];
    environment.systemPackages = [ pkgs.minio-client pkgs.jq fleetPackages.fleet-publish ];
    # fleet-publish reads closures from this node's Nix database: register both.
    virtualisation.additionalPaths = [ fakeSystem nodes.agent.system.build.toplevel ];
    virtualisation.memorySize = 2048;
  };

  nodes.agent = { pkgs, ... }: {
    imports = [ fleetModule ];

    services.fleet-agent = {
      enable = true;
      bucket = store;
      host = "agent";
      trustedPublisherKeys = [ signingPublic ];
      trustedCacheKeys = [ signingPublic ];
      environmentFile = "/etc/fleet-agent.env";
      pollInterval = 2;
      pollJitter = 0;
      requestTimeout = 10;
      healthChecks = [ { systemdUnit = "multi-user.target"; timeout = 30; } ];
    };

    environment.etc."fleet-agent.env".text = ''
      AWS_ACCESS_KEY_ID=${agentCreds.id}
      AWS_SECRET_ACCESS_KEY=${agentCreds.secret}
    '';

    # Step 2's target: this very system plus one file.
    specialisation.next.configuration = {
      environment.etc."fleet-generation".text = "next\n";
    };

    virtualisation.memorySize = 2048;
  };

  testScript = { nodes, ... }:
    let
      nextSystem = "${nodes.agent.system.build.toplevel}/specialisation/next";
    in
    ''
      import json

      start_all()

      publisher.wait_for_unit("minio.service")
      publisher.wait_for_open_port(9000)

      with subtest("bucket and per-role users with fleet's policies"):
          publisher.succeed(
              "mc alias set local http://localhost:9000 ${minioRoot.user} ${minioRoot.password}",
              "mc mb local/fleet",
              "fleet-publish policy --role agent --host agent --bucket fleet > /tmp/agent-policy.json",
              "fleet-publish policy --role publisher --bucket fleet > /tmp/publisher-policy.json",
              "mc admin policy create local fleet-agent-agent /tmp/agent-policy.json",
              "mc admin policy create local fleet-publisher /tmp/publisher-policy.json",
              "mc admin user add local ${agentCreds.id} ${agentCreds.secret}",
              "mc admin user add local ${publisherCreds.id} ${publisherCreds.secret}",
              "mc admin policy attach local fleet-agent-agent --user ${agentCreds.id}",
              "mc admin policy attach local fleet-publisher --user ${publisherCreds.id}",
              "printf '%s' '${signingSecret}' > /tmp/signing.key",
          )

      publish_env = (
          "AWS_ACCESS_KEY_ID=${publisherCreds.id} AWS_SECRET_ACCESS_KEY=${publisherCreds.secret} "
          "FLEET_BUCKET='${store}' FLEET_CACHE_KEY=/tmp/signing.key FLEET_SIGNING_KEY=/tmp/signing.key"
      )

      def status():
          out = publisher.succeed("mc cat local/fleet/status/agent/status.json")
          return json.loads(out)

      def wait_healthy(sequence):
          def ok(_):
              try:
                  s = status()
              except Exception:
                  return False
              return s["state"] == "healthy" and s["current"]["sequence"] == sequence
          retry(ok, timeout=300)

      agent.wait_for_unit("fleet-agent.service")

      with subtest("step 1: fetch, import and run a closure the agent does not have"):
          agent.fail("nix-store --check-validity ${fakeSystem}")
          publisher.succeed(
              f"{publish_env} fleet-publish deploy --host agent --closure ${fakeSystem} --activation test"
          )
          wait_healthy(1)
          agent.succeed("nix-store --check-validity ${fakeSystem}")
          agent.succeed("grep -qx test /run/fleet-fake-switch")

      with subtest("the agent's credentials reach its manifest, and no listing or other host"):
          # MC_HOST_<alias> configures mc without the probe `mc alias set` makes.
          mc = (
              "set -a; . /etc/fleet-agent.env; "
              "MC_HOST_a=http://$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY@publisher:9000 "
              "${pkgs.minio-client}/bin/mc "
          )
          agent.succeed(mc + "cat a/fleet/hosts/agent/manifest.json")
          agent.fail(mc + "ls a/fleet/")
          agent.fail(mc + "cp /etc/hostname a/fleet/status/other-host/x")
          agent.fail(mc + "cp /etc/hostname a/fleet/hosts/agent/manifest.json")

      with subtest("step 2: switch the host to a new NixOS generation"):
          agent.fail("test -e /etc/fleet-generation")
          invocation = agent.succeed("systemctl show -P InvocationID fleet-agent.service").strip()
          publisher.succeed(
              f"{publish_env} fleet-publish deploy --host agent --closure ${nextSystem} --activation switch"
          )
          wait_healthy(2)
          agent.succeed("grep -qx next /etc/fleet-generation")
          agent.succeed("test \"$(readlink -f /run/current-system)\" = \"$(readlink -f ${nextSystem})\"")
          agent.succeed("test \"$(readlink -f /nix/var/nix/profiles/system)\" = \"$(readlink -f ${nextSystem})\"")
          # The switch did not restart the agent's own unit (restartIfChanged = false).
          agent.succeed("systemctl is-active fleet-agent.service")
          assert agent.succeed("systemctl show -P InvocationID fleet-agent.service").strip() == invocation
    '';
}
