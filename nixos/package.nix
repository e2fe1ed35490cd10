# One fleet binary (`crate` is fleet-publish, fleet-agent or fleet-reporter), built
# from this repository with the locked dependencies. Used by flake.nix.
#
# Not built here: the project's machines have no nixpkgs (see nixos/README.md).
{ lib, rustPlatform, cmake, perl, crate }:

let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;

  # Tests that need programs a build sandbox lacks (/bin/true, /bin/sleep; only
  # /bin/sh exists there). They run in CI with everything else (scripts/test.sh),
  # like the end-to-end tests in tests/, which need real Nix and S3 servers and are
  # not run here at all (-p CRATE selects only the crate's own tests).
  skips = {
    fleet-agent = [
      "health::tests::commands_pass_and_fail_with_the_reason"
      "health::tests::a_hanging_check_is_cut_at_its_timeout"
    ];
  };
in
rustPlatform.buildRustPackage {
  pname = crate;
  inherit (workspace) version;

  # The whole workspace (Cargo needs every member), without build outputs or venvs.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../core
      ../publisher
      ../agent
      ../reporter
      ../tests
      ../bench
      # Read by fleet-core's tests (docs/formats.md examples, policy templates).
      ../docs
      ../terraform/modules/fleet-policies/policies
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # aws-lc-sys (TLS through object_store/reqwest) builds C with CMake and Perl; the
  # CMake setup hook must not take over the configure phase.
  nativeBuildInputs = [ cmake perl ];
  dontUseCmakeConfigure = true;

  cargoBuildFlags = [ "-p" crate ];
  cargoTestFlags = [ "-p" crate ];
  checkFlags = map (t: "--skip=${t}") (skips.${crate} or [ ]);

  meta = {
    description = "fleet: pull-based NixOS fleet deployment driven by an S3 bucket (${crate})";
    homepage = workspace.repository;
    license = lib.licenses.asl20;
    mainProgram = crate;
    platforms = lib.platforms.linux;
  };
}
