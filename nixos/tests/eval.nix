# Evaluates services.fleet-agent and services.fleet-reporter for `configuration` (a
# NixOS module) with the real nixpkgs lib's module system, without nixpkgs: the
# NixOS options they set are declared in ./nixos-options.nix, `pkgs` has only what
# the modules use (writeText as builtins.toFile, so the configuration files are
# real store files), and the units are rendered the way nixpkgs' systemd-lib
# (serviceToUnit, attrsToSection) renders them.
#
#   nix-instantiate --eval --strict --json nixos/tests/eval.nix \
#     --arg lib 'import NIXPKGS/lib' --arg configuration '{ ... }'
#
# Result: { assertions = [ failed messages ]; } when an assertion fails (NixOS
# stops there too), else { assertions = [ ]; warnings; units.<name> = unit file
# text; timers.<name> = timer unit text; wantedBy.<name> (and <name>.timer);
# etc.<path> = store path; files.<store path> = content;
# systemPackages = [ names ]; }. tests/tests/nixos_eval.rs drives it.
{ lib, configuration }:

let
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    writeText = name: text: builtins.toFile name text;
    fleet-agent = fakePackage "fleet-agent-0.1.0";
    fleet-reporter = fakePackage "fleet-reporter-0.1.0";
    fleet-publish = fakePackage "fleet-publish-0.1.0";
  };

  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      ../module.nix
      ../reporter.nix
      ../renew.nix
      { _module.args.pkgs = pkgs; }
      configuration
    ];
  };
  cfg = evaluated.config;

  failed = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);

  # systemd-lib.nix: toOption and attrsToSection.
  toOption = v:
    if v == true then "true"
    else if v == false then "false"
    else toString v;
  section = attrs: lib.concatStrings (lib.mapAttrsToList
    (name: value: lib.concatMapStrings (v: "${name}=${toOption v}\n") (lib.toList value))
    attrs);

  # systemd.nix: serviceToUnit, for what the fleet modules use.
  render = name: s:
    let
      joined = key: list: lib.optionalAttrs (list != [ ]) { ${key} = lib.concatStringsSep " " list; };
      unit = { Description = s.description; }
        // joined "Wants" s.wants // joined "Requires" s.requires
        // joined "After" s.after // joined "Before" s.before
        // lib.optionalAttrs (s.restartTriggers != [ ]) { X-Restart-Triggers = map toString s.restartTriggers; }
        // lib.optionalAttrs (!s.restartIfChanged) { X-RestartIfChanged = false; }
        // lib.optionalAttrs (s.startLimitIntervalSec != null) { StartLimitIntervalSec = s.startLimitIntervalSec; }
        // s.unitConfig;
      env = s.environment // lib.optionalAttrs (s.path != [ ]) {
        PATH = "${lib.makeBinPath s.path}:${lib.makeSearchPathOutput "bin" "sbin" s.path}";
      };
      environment = lib.mapAttrsToList (k: v: "\"${k}=${toString v}\"") (lib.filterAttrs (_: v: v != null) env);
    in
    "[Unit]\n${section unit}\n[Service]\n${section ({ Environment = environment; } // s.serviceConfig)}";

  # systemd.nix: timerToUnit.
  renderTimer = name: t:
    "[Unit]\n${section ({ Description = t.description; } // t.unitConfig)}\n[Timer]\n${section t.timerConfig}";
  fleetTimers = lib.filterAttrs (n: t: lib.hasPrefix "fleet-" n && t.enable) cfg.systemd.timers;

  fleetServices = lib.filterAttrs (n: s: lib.hasPrefix "fleet-" n && s.enable) cfg.systemd.services;
  etc = lib.mapAttrs (_: e: toString e.source) (lib.filterAttrs (_: e: e.enable) cfg.environment.etc);
  configFiles = lib.filter (p: lib.hasPrefix builtins.storeDir p && lib.hasSuffix ".toml" p)
    (lib.attrValues etc ++ lib.concatMap
      (s: lib.filter (w: lib.hasPrefix builtins.storeDir w) (lib.splitString " " (toString s.serviceConfig.ExecStart or "")))
      (lib.attrValues fleetServices));
in
if failed != [ ] then { assertions = failed; } else {
  assertions = [ ];
  inherit (cfg) warnings;
  units = lib.mapAttrs render fleetServices;
  timers = lib.mapAttrs renderTimer fleetTimers;
  wantedBy = lib.mapAttrs (_: s: s.wantedBy) fleetServices // lib.mapAttrs' (n: t: lib.nameValuePair "${n}.timer" t.wantedBy) fleetTimers;
  inherit etc;
  # Attribute names may not carry string context.
  files = lib.listToAttrs (map (p: lib.nameValuePair (builtins.unsafeDiscardStringContext p) (builtins.readFile p)) configFiles);
  systemPackages = map (p: p.name) cfg.environment.systemPackages;
}
