//! Helpers shared by the offline infrastructure tests (`infra`, `terraform_schema`,
//! `nixos_eval`, `lambda_zip`): the repository root, a command's output for failure
//! messages, scratch copies of a directory, and the vendored reference data
//! (`shared/vendor/…` beside the checkout or beside its directory of worktrees).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (the parent of `tests/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Copies the tree `from` to `to`, leaving out Terraform's working files
/// (`.terraform/`, state files) so a copy starts clean.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".terraform" || name.to_string_lossy().starts_with("terraform.tfstate") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `shared/vendor/<name>` beside the checkout (or beside the directory holding it,
/// for a worktree), if it is there.
pub fn vendored(name: &str) -> Option<PathBuf> {
    let root = repo();
    [root.parent(), root.parent().and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|up| up.join("shared/vendor").join(name))
        .find(|d| d.is_dir())
}
