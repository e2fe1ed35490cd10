# The fleet-agent configuration file (agent/src/config.rs; keys are the long flag
# names) for the evaluated `services.fleet-agent` options `cfg`. Builtins only, like
# ./toml.nix, so tests/tests/infra.rs can check its output against the real agent.
#
# Durations are whole seconds in the module and "<n>s" in the file.
cfg:
let
  inherit (builtins) attrNames filter removeAttrs;

  withoutNulls = attrs: removeAttrs attrs (filter (k: attrs.${k} == null) (attrNames attrs));
  seconds = n: if n == null then null else "${toString n}s";
  nonEmpty = l: if l == [ ] then null else l;

  check = c: withoutNulls {
    systemd-unit = c.systemdUnit;
    system-running = if c.systemRunning or false then true else null;
    command = c.command;
    http = c.http;
    timeout = seconds c.timeout;
    grace = seconds (c.grace or null);
  };
in
withoutNulls {
  bucket = cfg.bucket;
  host = cfg.host;
  trusted-publisher-keys = nonEmpty cfg.trustedPublisherKeys;
  trusted-cache-keys = nonEmpty cfg.trustedCacheKeys;
  trust-root-keys = nonEmpty (cfg.trustRootKeys or [ ]);
  trust-root-version = if (cfg.trustRootKeys or [ ]) == [ ] then null else cfg.trustRootVersion;
  labels = nonEmpty (cfg.labels or [ ]);
  poll-interval = seconds cfg.pollInterval;
  poll-jitter = seconds cfg.pollJitter;
  heartbeat-interval = seconds cfg.heartbeatInterval;
  backoff-max = seconds cfg.backoffMax;
  request-timeout = seconds cfg.requestTimeout;
  activation-timeout = seconds cfg.activationTimeout;
  health-timeout = seconds cfg.healthTimeout;
  health-checks = map check cfg.healthChecks;
  connectivity-timeout = seconds cfg.connectivityTimeout;
  reboot = cfg.reboot;
  maintenance-windows = cfg.maintenanceWindows;
  time-zone = cfg.timeZone;
  import-via = cfg.importVia or null;
  max-queued-events = cfg.maxQueuedEvents;
  metrics-file = cfg.metricsFile;
  log-format = cfg.logFormat;
  # The unit is not restarted by the switch (restartIfChanged = false): the agent
  # leaves after a switch and systemd starts it again from the new system.
  restart-after-switch = true;
}
// cfg.extraSettings
