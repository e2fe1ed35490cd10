# services.fleet-renew: `fleet-publish renew --all` on a schedule, for the host that
# holds the publisher key. Manifests expire (7 days by default, freeze
# protection); a renewal re-signs those that expire soon with the same closure and
# a higher sequence, from the bucket alone (no Nix store, no build), and no host
# switches. A oneshot service started by a timer; the signing key reaches it with
# LoadCredential=, so it may stay readable by root only.
#
# Evaluated by tests/tests/nixos_eval.rs (nixpkgs lib, NixOS options declared as
# nixpkgs has them); its TOML is read by the real fleet-publish. See
# docs/operations.md ("Renew on a schedule").
{ config, lib, pkgs, ... }:

let
  cfg = config.services.fleet-renew;
  inherit (lib) mkEnableOption mkIf mkOption types literalExpression;

  toTOML = import ./lib/toml.nix;
  # systemd puts LoadCredential= files here for a system service.
  keyPath = "/run/credentials/fleet-renew.service/signing-key";
  settings = lib.filterAttrs (_: v: v != null) {
    bucket = cfg.bucket;
    signing-key = keyPath;
    within = cfg.within;
    expires-in = cfg.expiresIn;
    trusted-key = if cfg.trustedPublisherKeys == [ ] then null else cfg.trustedPublisherKeys;
  } // cfg.extraSettings;
  configFile = pkgs.writeText "fleet-renew.toml" (toTOML settings);
in
{
  options.services.fleet-renew = {
    enable = mkEnableOption "renewing the fleet's manifests on a schedule (fleet-publish renew --all)";

    package = mkOption {
      type = types.package;
      default = pkgs.fleet-publish;
      defaultText = literalExpression "pkgs.fleet-publish";
      description = "The fleet-publish package. The flake's nixosModules.default sets it to the flake's own build.";
    };

    bucket = mkOption {
      type = types.str;
      example = "s3://fleet-prod/prod?region=eu-west-1";
      description = "The fleet bucket URL.";
    };

    signingKeyFile = mkOption {
      type = types.str;
      example = "/run/secrets/fleet-publisher.secret";
      description = "The publisher's secret key file (fleet-publish keygen). A path string, never a Nix path value: it must not enter the store. Passed with LoadCredential=.";
    };

    schedule = mkOption {
      type = types.str;
      default = "*-*-* 00/6:00:00";
      example = "daily";
      description = "When to run (systemd OnCalendar=). Every six hours by default, so a renewal missed once (bucket down) is retried well inside the renew window.";
    };

    randomizedDelay = mkOption {
      type = types.str;
      default = "15m";
      description = "RandomizedDelaySec= of the timer, so publishers of several fleets do not all run at once.";
    };

    within = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "3d";
      description = "Renew manifests expiring within this window (fleet-publish renew --within) [default: 2d]. Keep it well above the time between two runs.";
    };

    expiresIn = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "7d";
      description = "Lifetime of the renewed manifests (--expires-in) [default: 7d].";
    };

    trustedPublisherKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Other publisher public keys whose manifests may be renewed (the signing key's own is always accepted).";
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "File with the publisher's bucket credentials as environment variables (AWS_ACCESS_KEY_ID=…, AWS_SECRET_ACCESS_KEY=…). A path string, never a Nix path value.";
    };

    extraSettings = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]);
      default = { };
      example = { renew-concurrency = 64; };
      description = "More keys for fleet-publish's TOML file (publisher/src/config.rs).";
    };
  };

  config = mkIf cfg.enable {
    systemd.services.fleet-renew = {
      description = "renew the fleet's manifests before they expire";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/fleet-publish renew --all --config ${configFile}";
        DynamicUser = true;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = [ "signing-key:${cfg.signingKeyFile}" ];

        CapabilityBoundingSet = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        UMask = "0077";
      };
    };

    systemd.timers.fleet-renew = {
      description = "renew the fleet's manifests on a schedule";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule;
        RandomizedDelaySec = cfg.randomizedDelay;
        # A run missed while the machine was off happens at the next boot.
        Persistent = true;
      };
    };
  };
}
