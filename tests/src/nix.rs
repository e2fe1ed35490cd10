//! Real Nix for tests.
