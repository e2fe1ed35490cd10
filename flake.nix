{
  description = "fleet: pull-based NixOS fleet deployment driven by an S3 or MinIO bucket";

  # Rust 1.88 or newer (workspace rust-version, edition 2024).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  # Evaluated without nixpkgs by tests/tests/nixos_eval.rs (nixos/tests/flake-eval.nix:
  # the real nixpkgs lib, the rest of nixpkgs stood in for); not built, and no
  # flake.lock, on machines without nixpkgs or network. See nixos/README.md.
  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      crates = [ "fleet-publish" "fleet-agent" "fleet-reporter" ];
      buildCrate = pkgs: crate: pkgs.callPackage ./nixos/package.nix { inherit crate; };
    in
    {
      overlays.default = final: _prev:
        lib.genAttrs crates (buildCrate final);

      packages = forAllSystems (pkgs:
        lib.genAttrs crates (buildCrate pkgs) // {
          default = pkgs.symlinkJoin {
            name = "fleet";
            paths = map (c: self.packages.${pkgs.stdenv.hostPlatform.system}.${c}) crates;
          };

          # The dashboard for AWS Lambda (provided.al2023): a static musl build named
          # `bootstrap` in result/fleet-reporter-lambda.zip, for
          # terraform/modules/aws-fleet's dashboard_package (terraform/examples/aws
          # points there). Its architecture is this system's (x86_64 or arm64 in
          # Lambda's terms). scripts/lambda_zip.py packs it with fixed timestamps and
          # modes, so the zip's hash (Terraform's source_code_hash) changes only with
          # the binary.
          fleet-reporter-lambda =
            let reporter = buildCrate pkgs.pkgsStatic "fleet-reporter";
            in pkgs.runCommand "fleet-reporter-lambda" { nativeBuildInputs = [ pkgs.python3 ]; } ''
              mkdir -p "$out"
              python3 ${./scripts/lambda_zip.py} ${reporter}/bin/fleet-reporter "$out/fleet-reporter-lambda.zip"
            '';
        });

      # services.fleet-agent and services.fleet-reporter, with this flake's packages
      # as defaults.
      nixosModules.default = { pkgs, ... }: {
        imports = [ ./nixos/module.nix ./nixos/reporter.nix ./nixos/renew.nix ];
        services.fleet-agent.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.fleet-agent;
        services.fleet-reporter.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.fleet-reporter;
        services.fleet-renew.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.fleet-publish;
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.fleet-agent ];
          packages = [
            pkgs.cargo-nextest
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.nix
            pkgs.python3
            pkgs.minio
            pkgs.minio-client
            pkgs.opentofu
          ];
        };
      });

      checks = forAllSystems (pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
        in
        lib.genAttrs crates (c: self.packages.${system}.${c})
        // lib.optionalAttrs (system == "x86_64-linux") {
          # Needs KVM.
          vm-test = import ./nixos/tests/vm-test.nix {
            inherit pkgs;
            fleetModule = self.nixosModules.default;
            fleetPackages = self.packages.${system};
          };
        });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
