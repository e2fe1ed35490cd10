# services.fleet-reporter: the fleet dashboard (`fleet-reporter serve`) as a
# systemd service. It only reads the bucket over HTTPS (and writes
# dashboard/snapshot.json), so unlike the agent it runs fully sandboxed as a
# dynamic user.
#
# Evaluated by tests/tests/nixos_eval.rs (nixpkgs lib, NixOS options declared as
# nixpkgs has them); its TOML is read by the real fleet-reporter. See
# nixos/README.md.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.fleet-reporter;
  inherit (lib) mkEnableOption mkIf mkOption types literalExpression;

  toTOML = import ./lib/toml.nix;
  # systemd puts LoadCredential= files here for a system service.
  tokenPath = "/run/credentials/fleet-reporter.service/token";
  settings = lib.filterAttrs (_: v: v != null) {
    bucket = cfg.bucket;
    listen = cfg.listen;
    trusted-key = cfg.trustedPublisherKeys;
    token-file = if cfg.tokenFile == null then null else tokenPath;
  } // cfg.extraSettings;
  configFile = pkgs.writeText "fleet-reporter.toml" (toTOML settings);
in
{
  # `store` was the old name of `bucket`: configurations using it still evaluate,
  # with a warning.
  imports = [
    (lib.mkRenamedOptionModule [ "services" "fleet-reporter" "store" ] [ "services" "fleet-reporter" "bucket" ])
  ];

  options.services.fleet-reporter = {
    enable = mkEnableOption "the fleet dashboard (fleet-reporter serve)";

    package = mkOption {
      type = types.package;
      default = pkgs.fleet-reporter;
      defaultText = literalExpression "pkgs.fleet-reporter";
      description = "The fleet-reporter package. The flake's nixosModules.default sets it to the flake's own build.";
    };

    bucket = mkOption {
      type = types.str;
      example = "s3://fleet-prod/prod?region=eu-west-1";
      description = "The fleet bucket URL.";
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:8080";
      description = "Address and port to serve on. The reporter refuses a non-loopback address without a token.";
    };

    trustedPublisherKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Publisher public keys the dashboard verifies manifests with; without any it shows them as not verified.";
    };

    tokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/fleet-reporter-token";
      description = "File holding the bearer token (at least 16 characters) every request must carry; passed to the service with LoadCredential=, so it may stay readable by root only.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "File with the reporter's bucket credentials as environment variables (AWS_ACCESS_KEY_ID=…, AWS_SECRET_ACCESS_KEY=…). A path string, never a Nix path value.";
    };

    extraSettings = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]);
      default = { };
      example = { stale-after = "5m"; };
      description = "More keys for the reporter's TOML file (reporter/src/config.rs).";
    };
  };

  config = mkIf cfg.enable {
    systemd.services.fleet-reporter = {
      description = "fleet dashboard";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      restartTriggers = [ configFile ];

      serviceConfig = {
        ExecStart = "${cfg.package}/bin/fleet-reporter serve --config ${configFile}";
        Restart = "on-failure";
        RestartSec = "5s";
        DynamicUser = true;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = lib.optional (cfg.tokenFile != null) "token:${cfg.tokenFile}";

        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
        UMask = "0077";
      };
    };
  };
}
