# Evaluates flake.nix's outputs with the real nixpkgs lib and a stand-in for the
# rest of nixpkgs, so its structure is checked without nixpkgs: every output
# exists for both systems, the packages come from nixos/package.nix with the
# flags it means (rustPlatform.buildRustPackage is recorded, not run; its `src`,
# which needs lib.fileset and so Nix >= 2.14's builtins.readFileType, is never
# forced), the Lambda zip's build script, the overlay, the VM test's definition,
# and nixosModules.default evaluated through ./eval.nix with the flake's own
# packages as the modules' defaults. Nothing is built. tests/tests/nixos_eval.rs
# drives it:
#
#   nix-instantiate --eval --strict --json nixos/tests/flake-eval.nix --arg lib 'import NIXPKGS/lib'
{ lib }:

let
  flake = import ../../flake.nix;

  drv = name: extra: {
    type = "derivation";
    inherit name;
    # Not eval.nix's stand-in hash: the units show which package they got.
    outPath = "/nix/store/11111111111111111111111111111111-${name}";
  } // extra;

  pkgsFor = system: static: lib.fix (pkgs: {
    inherit lib;
    stdenv.hostPlatform = { inherit system; isStatic = static; };
    pkgsStatic = pkgsFor system true;
    callPackage = f: args: import f ({
      inherit lib;
      rustPlatform.buildRustPackage = a: drv "${a.pname}-${a.version}${lib.optionalString static "-static"}" {
        inherit (a) pname version cargoBuildFlags cargoTestFlags checkFlags dontUseCmakeConfigure meta;
        nativeBuildInputs = map (p: p.name) a.nativeBuildInputs;
        cargoLock = toString a.cargoLock.lockFile;
      };
      cmake = drv "cmake" { };
      perl = drv "perl" { };
    } // args);
    runCommand = name: env: script: drv name {
      inherit script;
      nativeBuildInputs = map (p: p.name) (env.nativeBuildInputs or [ ]);
    };
    symlinkJoin = { name, paths }: drv name { paths = map (p: p.name) paths; };
    mkShell = _: drv "shell" { };
    python3 = drv "python3" { };
    nixpkgs-fmt = drv "nixpkgs-fmt" { };
    testers.runNixOSTest = test: drv "vm-test" { inherit test; };
  });

  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (s: pkgsFor s false);
  };
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };

  names = lib.mapAttrs (_: lib.attrNames);
  pkg = p: { inherit (p) name pname cargoBuildFlags checkFlags nativeBuildInputs; mainProgram = p.meta.mainProgram; };
  module = (import ./eval.nix {
    inherit lib;
    configuration = {
      imports = [ outputs.nixosModules.default ];
      _module.args.pkgs = lib.mkForce (nixpkgs.legacyPackages.x86_64-linux // {
        writeText = name: text: builtins.toFile name text;
      });
      services.fleet-agent = {
        enable = true;
        bucket = "file:///var/empty/bucket";
        trustedPublisherKeys = [ "p-1:x" ];
        trustedCacheKeys = [ "c-1:y" ];
      };
      services.fleet-reporter = { enable = true; bucket = "file:///var/empty/bucket"; };
    };
  });
  vm = outputs.checks.x86_64-linux.vm-test.test;
in
{
  inputs = lib.attrNames (flake.inputs or { });
  nixpkgsUrl = flake.inputs.nixpkgs.url;
  outputs = lib.attrNames outputs;
  packages = names outputs.packages;
  checks = names outputs.checks;
  devShells = names outputs.devShells;
  formatter = lib.mapAttrs (_: f: f.name) outputs.formatter;
  overlay = lib.attrNames (outputs.overlays.default nixpkgs.legacyPackages.x86_64-linux { });
  agent = pkg outputs.packages.x86_64-linux.fleet-agent;
  default = outputs.packages.x86_64-linux.default.paths;
  lambda = with outputs.packages.x86_64-linux.fleet-reporter-lambda; { inherit name script nativeBuildInputs; };
  vmTest = { name = vm.name; nodes = lib.attrNames vm.nodes; };
  moduleUnits = lib.mapAttrs (_: u: lib.head (lib.filter (lib.hasPrefix "ExecStart=") (lib.splitString "\n" u))) module.units;
}
