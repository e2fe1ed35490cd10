# services.fleet-agent: the fleet agent on a NixOS host, as a systemd service.
#
# The agent follows hosts/<host>/manifest.json in the fleet bucket, fetches the
# signed closure, activates it with the closure's own switch-to-configuration,
# checks health, rolls back, and reports (docs/agent.md). Its settings become
# /etc/fleet/agent.toml (agent/src/config.rs is the schema); S3 credentials come
# from `credentialFiles` (LoadCredential=, read from $CREDENTIALS_DIRECTORY) or
# `environmentFile`, neither of which enters the Nix store. The agent never passes
# them on to switch-to-configuration or health checks (docs/agent.md).
#
# Evaluated by tests/tests/nixos_eval.rs with the real nixpkgs lib (evalModules) and
# the NixOS options it sets declared as nixpkgs types them; the TOML it writes is
# fed to the real fleet-agent. The VM test (nixos/tests/vm-test.nix) needs nixpkgs
# and KVM and has not run. See nixos/README.md.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.fleet-agent;
  inherit (lib) mkEnableOption mkIf mkOption types literalExpression;

  toTOML = import ./lib/toml.nix;
  settings = import ./lib/agent-settings.nix cfg;
  configFile = pkgs.writeText "fleet-agent.toml" (toTOML settings);

  seconds = description: default: mkOption {
    type = types.ints.positive;
    inherit default;
    description = "${description} In seconds.";
  };

  # One file of credentialFiles: passed with LoadCredential= under `name`.
  credentialFile = what: name: mkOption {
    type = types.nullOr types.str;
    default = null;
    example = "/run/secrets/fleet-${name}";
    description = ''
      File holding ${what} for the bucket, the bare value on one line. systemd
      hands it to the agent with `LoadCredential=${name}:PATH` (the agent reads
      `$CREDENTIALS_DIRECTORY/${name}`), so it may stay readable by root only. A
      path string (e.g. from agenix or sops-nix), never a Nix path value, which
      would copy the secret into the world-readable store. Takes precedence over
      the keys of `environmentFile`.
    '';
  };
  credentialList = lib.filter (c: c.path != null) [
    { name = "aws-access-key-id"; path = cfg.credentialFiles.accessKeyId; }
    { name = "aws-secret-access-key"; path = cfg.credentialFiles.secretAccessKey; }
    { name = "aws-session-token"; path = cfg.credentialFiles.sessionToken; }
  ];

  healthCheck = types.submodule {
    options = {
      systemdUnit = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "nginx.service";
        description = "A systemd unit that must be active (`systemctl is-active`; `activating` is waited for).";
      };
      systemRunning = mkOption {
        type = types.bool;
        default = false;
        description = "Check that `systemctl is-system-running` says `running` (`degraded`, i.e. some unit failed, fails the check).";
      };
      command = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = null;
        example = literalExpression ''[ "''${pkgs.curl}/bin/curl" "-fsS" "http://127.0.0.1/" ]'';
        description = "A command (program and arguments) that must exit 0.";
      };
      http = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://127.0.0.1:8080/healthz";
        description = "A URL that must answer 2xx to a GET.";
      };
      timeout = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Bound on this check in seconds (default: `healthTimeout`); it is retried every second until then.";
      };
      grace = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        description = "Seconds failures are retried (default: the whole timeout); after that a failure rolls back at once, unless the unit or system is still settling (`activating`, `starting`).";
      };
    };
  };

  # HostName (fleet-core): one DNS label of lowercase letters, digits and `-`.
  hostPattern = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
in
{
  # `store` was the old name of `bucket`: configurations using it still evaluate,
  # with a warning.
  imports = [
    (lib.mkRenamedOptionModule [ "services" "fleet-agent" "store" ] [ "services" "fleet-agent" "bucket" ])
  ];

  options.services.fleet-agent = {
    enable = mkEnableOption "the fleet agent, which deploys this host from signed manifests in a fleet bucket";

    package = mkOption {
      type = types.package;
      default = pkgs.fleet-agent;
      defaultText = literalExpression "pkgs.fleet-agent";
      description = "The fleet-agent package. The flake's nixosModules.default sets it to the flake's own build.";
    };

    bucket = mkOption {
      type = types.str;
      example = "s3://fleet-prod/prod?region=eu-west-1";
      description = ''
        The fleet bucket: `s3://BUCKET[/PREFIX][?endpoint=URL&region=R]` (the
        `store_url` output of the Terraform modules) or `file:///PATH`.
      '';
    };

    host = mkOption {
      # Checked by an assertion rather than the type, so a bad name (an upper-case
      # or empty networking.hostName) gets a message saying what to do.
      type = types.str;
      default = lib.toLower config.networking.hostName;
      defaultText = literalExpression "lib.toLower config.networking.hostName";
      description = ''
        This host's name in the bucket (hosts/<host>/manifest.json): one DNS label
        of lowercase letters, digits and `-`. Its IAM credentials must be the ones
        made for this name.
      '';
    };

    trustedPublisherKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "publisher-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI=" ];
      description = "Publisher public keys (`name:base64`) that may sign this host's manifests. Leave empty with `trustRootKeys`.";
    };

    trustedCacheKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Cache public keys (`name:base64`) that may sign narinfos; intersected with each manifest's `cache_keys`. Leave empty with `trustRootKeys`.";
    };

    trustRootKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "root-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI=" ];
      description = ''
        Root public keys (`name:base64`) of the bucket's root of trust
        (`trust/root.json`, docs/operations.md). With them the publisher and cache
        keys come from the root, so rotating or revoking one touches no host; leave
        `trustedPublisherKeys` and `trustedCacheKeys` empty.
      '';
    };

    trustRootVersion = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "The root version `trustRootKeys` were taken from: the first version this host trusts.";
    };

    labels = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "role=web" ];
      description = "This host's labels, matched by the scopes of publisher keys in the root of trust.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/fleet-agent.env";
      description = ''
        File with the bucket credentials as environment variables
        (`AWS_ACCESS_KEY_ID=…`, `AWS_SECRET_ACCESS_KEY=…`), read by systemd when the
        service starts. `credentialFiles` is the better way: the keys are then
        never in the agent's environment. Give a path as a string (e.g. from agenix or sops-nix), not a
        Nix path value, which would copy the secret into the world-readable store.
        Leave null on EC2 with an instance profile: the agent then asks the instance
        metadata service.
      '';
    };

    credentialFiles = {
      accessKeyId = credentialFile "the access key id" "aws-access-key-id";
      secretAccessKey = credentialFile "the secret access key" "aws-secret-access-key";
      sessionToken = credentialFile "a session token (temporary credentials; optional)" "aws-session-token";
    };

    pollInterval = seconds "Time between manifest polls." 60;
    pollJitter = mkOption {
      type = types.ints.unsigned;
      default = 10;
      description = "Up to this much is added to each wait, so hosts do not poll in step. In seconds.";
    };
    heartbeatInterval = seconds "status.json is rewritten this often while nothing changes (keep it under the reporter's staleness bound, 3 minutes by default)." 120;
    backoffMax = seconds "Longest wait after failures." 900;
    requestTimeout = seconds "Bound on one bucket request." 30;
    activationTimeout = seconds "Bound on switch-to-configuration." 600;
    healthTimeout = seconds "Default bound on one health check." 60;
    reboot = mkOption {
      type = types.enum [ "never" "when-idle" "window" ];
      default = "never";
      description = "May the agent reboot the host for a `boot` deploy: never (an operator does), when-idle (no login session), window (inside maintenanceWindows).";
    };
    maintenanceWindows = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "Mon-Fri 02:00-04:00" "Sat,Sun 22:00-02:00" ];
      description = "When new generations are activated (and, with reboot = \"window\", when the agent reboots): days and a time range in timeZone. Empty: always.";
    };
    timeZone = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "Europe/Berlin";
      description = "IANA time zone of maintenanceWindows (default: the system's).";
    };
    connectivityTimeout = mkOption {
      type = types.ints.unsigned;
      default = 300;
      description = "After a switch and its health checks, seconds the agent tries to read its manifest and write its status before it rolls back (`connectivity-lost`); 0 turns the check off.";
    };

    healthChecks = mkOption {
      type = types.listOf healthCheck;
      default = [ ];
      example = literalExpression ''[ { systemdUnit = "nginx.service"; } { http = "http://127.0.0.1:8080/healthz"; timeout = 30; } ]'';
      description = "Checks run after each activation; if one fails the agent rolls back. Each sets exactly one of systemdUnit, command, http.";
    };

    metricsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text-files/fleet-agent.prom";
      description = ''
        File (ending in `.prom`) the agent rewrites after every cycle with
        Prometheus metrics: state, sequences, last success, last fetch, cycles by
        outcome (docs/agent.md). Point it into the directory of node-exporter's
        textfile collector (`services.prometheus.exporters.node.extraFlags =
        [ "--collector.textfile.directory=…" ]`). Off when null.
      '';
    };

    importVia = mkOption {
      type = types.enum [ "unpack" "staging" "substituter" ];
      default = "unpack";
      description = ''
        How verified store paths reach the Nix store (`import-via`, docs/agent.md):
        `unpack` writes each NAR into the store as it is checked and registers the
        closure once every path passed (the fastest; the agent remounts NixOS's
        read-only store writable for its own writing threads only, as Nix does);
        `staging` verifies into the state directory and imports with `nix copy`;
        `substituter` serves `nix copy` a verifying local substituter.
      '';
    };

    maxQueuedEvents = mkOption {
      type = types.ints.positive;
      default = 100;
      description = "Status events kept while the bucket cannot be written.";
    };

    logFormat = mkOption {
      type = types.enum [ "human" "json" ];
      default = "human";
      description = "Log lines on stderr (the journal): human-readable or one JSON object per line.";
    };

    extraSettings = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]);
      default = { };
      example = { "facts-root" = "/"; };
      description = "More keys for /etc/fleet/agent.toml (agent/src/config.rs), overriding the ones above. The agent refuses unknown keys.";
    };

    stopTimeout = seconds ''
      systemd's TimeoutStopSec. On stop the agent finishes an activation in flight,
      its health checks and a rollback first; if this passes, systemd kills it and
      the next start rolls the interrupted activation back
      (`activation-interrupted`, docs/agent.md). It holds up shutdown and reboot for
      at most this long.'' 300;

    enrollment = {
      createIdentity = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Before the agent starts, run `fleet-agent init`: create the host's
          identity key (/var/lib/fleet-agent/identity.key, kept across restarts)
          and write its enrollment request to
          /var/lib/fleet-agent/enrollment-request.json (also printed to the
          journal), for an admin to pass to `fleet-publish enroll`. The agent then
          signs its status reports with the key (docs/first-boot.md).
        '';
      };
      labels = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = literalExpression ''{ role = "web"; site = "fra1"; }'';
        description = "Labels the enrollment request asks the host registry for.";
      };
    };

    watchdogSec = mkOption {
      type = types.ints.positive;
      default = 3 * cfg.requestTimeout + 60;
      defaultText = literalExpression "3 * requestTimeout + 60";
      description = ''
        systemd's WatchdogSec. The agent pings at half of it between the awaits of
        its main loop, also while an activation runs; it must exceed 3 ×
        requestTimeout (docs/agent.md).
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.trustRootKeys != [ ] || (cfg.trustedPublisherKeys != [ ] && cfg.trustedCacheKeys != [ ]);
        message = "services.fleet-agent: trustedPublisherKeys and trustedCacheKeys need at least one key each (or give trustRootKeys); without them the agent refuses every manifest.";
      }
      {
        assertion = cfg.trustRootKeys == [ ] || (cfg.trustedPublisherKeys == [ ] && cfg.trustedCacheKeys == [ ]);
        message = "services.fleet-agent: with trustRootKeys the publisher and cache keys come from the root of trust; leave trustedPublisherKeys and trustedCacheKeys empty (a key revoked in the root would otherwise still be trusted).";
      }
      {
        assertion = builtins.match hostPattern cfg.host != null;
        message = "services.fleet-agent.host is ${builtins.toJSON cfg.host}, not a fleet host name (one DNS label: lowercase letters, digits and `-`, at most 63, not starting or ending with `-`)."
          + lib.optionalString (cfg.host == "") " networking.hostName is empty (cloud images take the name from DHCP): set services.fleet-agent.host to the name the host's IAM credentials were made for.";
      }
      {
        assertion = cfg.environmentFile == null || lib.hasPrefix "/" cfg.environmentFile;
        message = "services.fleet-agent.environmentFile must be an absolute path given as a string.";
      }
      {
        assertion = (cfg.credentialFiles.accessKeyId == null) == (cfg.credentialFiles.secretAccessKey == null)
          && (cfg.credentialFiles.sessionToken == null || cfg.credentialFiles.accessKeyId != null);
        message = "services.fleet-agent.credentialFiles: set accessKeyId and secretAccessKey together (sessionToken only with them).";
      }
      {
        assertion = lib.all (c: lib.hasPrefix "/" c.path) credentialList;
        message = "services.fleet-agent.credentialFiles must be absolute paths given as strings.";
      }
      {
        assertion = lib.all (k: builtins.match "[A-Za-z0-9._/-]{1,63}" k != null
          && builtins.match "[A-Za-z0-9._/:@+ -]{0,256}" cfg.enrollment.labels.${k} != null)
          (lib.attrNames cfg.enrollment.labels);
        message = "services.fleet-agent.enrollment.labels: names are 1 to 63 of A-Z a-z 0-9 . _ - /, values at most 256 of A-Z a-z 0-9 . _ - / : @ + and space.";
      }
      {
        assertion = cfg.watchdogSec > 3 * cfg.requestTimeout;
        message = "services.fleet-agent.watchdogSec (${toString cfg.watchdogSec}) must exceed 3 × requestTimeout (${toString (3 * cfg.requestTimeout)}).";
      }
    ] ++ lib.imap0
      (i: c: {
        assertion = lib.count (x: x != null && x != false) [ c.systemdUnit c.systemRunning c.command c.http ] == 1;
        message = "services.fleet-agent.healthChecks.${toString i} must set exactly one of systemdUnit, systemRunning, command, http.";
      })
      cfg.healthChecks;

    environment.etc."fleet/agent.toml".source = configFile;
    environment.systemPackages = [ cfg.package ];

    systemd.services.fleet-agent = {
      description = "fleet agent: follow this host's signed manifest";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.socket" ];

      # The agent runs switch-to-configuration as its own child, in this unit's
      # cgroup. If the switch restarted or stopped this unit (because the new
      # generation changes or drops it), systemd would kill the switch half way and
      # the restarted agent would roll back (activation-interrupted). Instead the
      # agent exits by itself once a switch is committed and reported
      # (restart-after-switch, set in lib/agent-settings.nix), and Restart=always
      # starts it again from the new system: a new agent or a new
      # /etc/fleet/agent.toml takes effect right after the switch that brought it.
      restartIfChanged = false;
      unitConfig.X-StopOnRemoval = false;
      # Never give up restarting: the agent is how this host gets fixed.
      startLimitIntervalSec = 0;

      # nix, nix-store, nix-env for import and profile switches; systemctl for
      # systemd-unit health checks. switch-to-configuration sets its own PATH.
      path = [ config.nix.package config.systemd.package ];
      environment = config.nix.envVars // config.networking.proxy.envVars // {
        HOME = "/root";
      } // lib.optionalAttrs cfg.enrollment.createIdentity {
        # For `fleet-agent init` in ExecStartPre; EnvironmentFile= overrides it.
        FLEET_AGENT_HOST = cfg.host;
      };

      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${cfg.package}/bin/fleet-agent run --config /etc/fleet/agent.toml";
        # The host name comes from FLEET_AGENT_HOST (set below, overridden by
        # environmentFile as the cloud image's user data does), as for the agent.
        ExecStartPre = lib.optional cfg.enrollment.createIdentity (lib.concatStringsSep " " ([
          "${cfg.package}/bin/fleet-agent init"
          "--state-dir /var/lib/fleet-agent"
          "--request-file /var/lib/fleet-agent/enrollment-request.json"
        ] ++ lib.mapAttrsToList (k: v: lib.escapeShellArg "--label=${k}=${v}") cfg.enrollment.labels));
        Restart = "always";
        RestartSec = "10s";
        WatchdogSec = cfg.watchdogSec;
        TimeoutStartSec = "5min";
        # On SIGTERM the agent finishes an activation, its health checks and a
        # rollback before it leaves (docs/agent.md). Waiting for the worst case of
        # all three (2 × activationTimeout + checks: 22 minutes by default) would
        # hold up every shutdown that long; past stopTimeout the next start rolls
        # back instead. Only the agent gets SIGTERM (mixed); a switch in flight is
        # not signalled.
        KillMode = "mixed";
        TimeoutStopSec = cfg.stopTimeout;

        StateDirectory = "fleet-agent";
        StateDirectoryMode = "0700";
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = map (c: "${c.name}:${c.path}") credentialList;

        # --- Hardening ---------------------------------------------------------
        # The agent must stay root and unconfined: every restriction of this unit
        # also binds its child switch-to-configuration, i.e. the whole system
        # activation. What is deliberately NOT set, and why:
        #   ProtectSystem, ProtectHome, ReadWritePaths, PrivateTmp, PrivateDevices,
        #     PrivateMounts: any of them gives the unit its own mount namespace. The
        #     activation writes /etc, /boot, /var, /home (createHome), remounts /run
        #     and mounts under /run; inside a namespace those mounts would not reach
        #     the host, and read-only paths would fail the switch.
        #   ProtectKernelTunables, ProtectKernelModules, ProtectKernelLogs,
        #     ProtectControlGroups, ProtectClock: the activation loads modules,
        #     writes /sys (EFI variables for the boot loader), and installs a boot
        #     loader on a raw disk (ProtectClock implies a device allow-list).
        #   ProtectHostname: the activation sets the host name.
        #   CapabilityBoundingSet, NoNewPrivileges, RestrictSUIDSGID: the activation
        #     needs root's capabilities, creates the setuid wrappers in
        #     /run/wrappers, and NoNewPrivileges blocks AppArmor/SELinux transitions
        #     of what it runs.
        #   MemoryDenyWriteExecute, SystemCallFilter: the activation runs arbitrary
        #     programs of the new generation (JITs, interpreters).
        # Running the switch in a transient unit (systemd-run) would lift all of this
        # for the agent itself; the agent does not do that yet (docs/agent.md).
        # What is safe for the activation too:
        UMask = "0022"; # the activation creates files the way nixos-rebuild does
        LockPersonality = true;
        RestrictRealtime = true;
        SystemCallArchitectures = "native";
        # The agent needs IP for the bucket and Unix sockets for the Nix daemon and
        # systemd; netlink is kept for the activation's network tools.
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
      };
    };
  };
}
