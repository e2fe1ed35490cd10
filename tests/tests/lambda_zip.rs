//! The Lambda package (`scripts/lambda_zip.py`, used by `flake.nix`'s
//! `fleet-reporter-lambda` and `scripts/lambda-zip.sh`): the same binary gives the
//! same zip, byte for byte, whatever its mtime and mode, so Terraform's
//! `source_code_hash` does not change on a rebuild.
//!
//! Only the packing is checked here, with a stand-in binary (the debug
//! `fleet-reporter` is hundreds of MB, too slow to deflate in a test): building the
//! static binary itself (`cargo build --release --target *-linux-musl`) needs a
//! Rust target this machine lacks and a release build the test suite does not run.

mod infra_support;

use infra_support::repo;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

fn pack(binary: &Path, out: &Path) -> String {
    let o = Command::new("python3")
        .arg(repo().join("scripts/lambda_zip.py"))
        .args([binary, out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    hex::encode(Sha256::digest(std::fs::read(out).unwrap()))
}

#[test]
fn the_same_binary_always_packs_to_the_same_zip() {
    let d = tempfile::tempdir().unwrap();
    // 1 MiB of ELF-like bytes: a header, then hashes (compressible in part).
    let reporter = d.path().join("fleet-reporter");
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    let mut h = Sha256::digest(b"fleet");
    while bytes.len() < 1 << 20 {
        h = Sha256::digest(h);
        bytes.extend_from_slice(&h);
        bytes.extend_from_slice(&[0; 32]);
    }
    std::fs::write(&reporter, &bytes).unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::copy(&reporter, &a).unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy made later, with another mode and mtime.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::copy(&reporter, &b).unwrap();
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o600)).unwrap();

    let first = pack(&a, &d.path().join("1.zip"));
    let second = pack(&b, &d.path().join("2.zip"));
    assert_eq!(first, second, "two packs of the same binary differ");

    // One entry, `bootstrap`, executable, the whole binary.
    let o = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             for i in z.infolist():\n\
             \x20   print(i.filename, oct(i.external_attr >> 16), i.date_time, len(z.read(i)))",
        ])
        .arg(d.path().join("1.zip"))
        .output()
        .unwrap();
    let size = std::fs::metadata(&reporter).unwrap().len();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("bootstrap 0o100755 (1980, 1, 1, 0, 0, 0) {size}\n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A different binary gives a different zip.
    let mut changed = std::fs::read(&reporter).unwrap();
    changed.push(0);
    std::fs::write(&b, changed).unwrap();
    assert_ne!(pack(&b, &d.path().join("3.zip")), first);
}
