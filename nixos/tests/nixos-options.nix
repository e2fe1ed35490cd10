# The NixOS options services.fleet-agent and services.fleet-reporter set, declared
# as nixpkgs declares them (nixos/modules/system/boot/systemd.nix and
# systemd-unit-options.nix, misc/assertions.nix, system/etc/etc.nix,
# config/system-path.nix, config/networking.nix, services/misc/nix-daemon.nix), with
# the same types and merge rules, so ./eval.nix can evaluate the modules with the
# real nixpkgs lib and no nixpkgs. Only what the modules touch is declared: an
# option they set that is missing here fails the evaluation.
{ lib, ... }:

let
  inherit (lib) mkOption types;

  # systemd-unit-options.nix: a unit setting; lists from several definitions are
  # concatenated (one `Key=` line each), anything else must be defined once.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    check = v: lib.isBool v || lib.isInt v || lib.isString v || lib.isPath v || lib.isList v
      || lib.isAttrs v && v ? outPath;
    merge = loc: defs:
      let defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs'
      then lib.concatMap (def: lib.toList def.value) defs'
      else lib.mergeEqualOption loc defs';
  };

  unitNames = mkOption { type = types.listOf types.str; default = [ ]; };

  service = types.submodule {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      wantedBy = unitNames;
      requiredBy = unitNames;
      wants = unitNames;
      requires = unitNames;
      after = unitNames;
      before = unitNames;
      path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
        default = { };
      };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      startLimitIntervalSec = mkOption { type = types.nullOr types.int; default = null; };
      script = mkOption { type = types.lines; default = ""; };
    };
  };

  timer = types.submodule {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      wantedBy = unitNames;
      timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
    };
    warnings = mkOption { type = types.listOf types.str; default = [ ]; };

    networking.hostName = mkOption {
      # config/networking.nix's type and default.
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.proxy.envVars = mkOption { type = types.attrs; default = { }; };

    nix.package = mkOption { type = types.package; default = fakePackage "nix-2.28"; };
    nix.envVars = mkOption { type = types.attrs; internal = true; default = { }; };
    systemd.package = mkOption { type = types.package; default = fakePackage "systemd-257"; };

    systemd.services = mkOption { type = types.attrsOf service; default = { }; };
    systemd.timers = mkOption { type = types.attrsOf timer; default = { }; };

    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    environment.etc = mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          enable = mkOption { type = types.bool; default = true; };
          target = mkOption { type = types.str; default = name; };
          source = mkOption { type = types.path; };
          text = mkOption { type = types.nullOr types.lines; default = null; };
          mode = mkOption { type = types.str; default = "symlink"; };
        };
      }));
      default = { };
    };
  };
}
