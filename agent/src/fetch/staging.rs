//! The staging directory: a Nix binary cache on local disk that the fetch fills with
//! verified files and `nix copy --from file://…` then imports from.
//!
//! Layout (the same as the bucket's `cache/`, so Nix reads it as a binary cache):
//!
//! ```text
//! <staging>/.lock              flock held while a fetch uses the directory
//! <staging>/nix-cache-info     StoreDir: /nix/store
//! <staging>/<hash>.narinfo     the narinfo as fleet-core parsed and verified it,
//!                              describing the staged file (see below)
//! <staging>/nar/<file>         the verified NAR, decompressed, under the name of the
//!                              bucket's file (the narinfo's `URL`)
//! ```
//!
//! The NAR is staged uncompressed so that Nix does not decompress it a second time:
//! the staged narinfo says `Compression: none`, and its `FileHash`/`FileSize` are the
//! `NarHash`/`NarSize`. Those fields are not signed (the signature covers the
//! fingerprint: path, `NarHash`, `NarSize`, references), so it still verifies. The
//! file keeps the bucket's name, `.zst` or `.xz` included: Nix goes by the
//! `Compression` field, and a rerun finds the file where the narinfo's `URL` says.
//!
//! Every file appears by rename from a hidden temporary file (`.<name>.…`) in the same
//! directory, so a kill never leaves a file under its final name that was not fully
//! written and verified. Temporary files left by a kill are removed when the next
//! fetch opens the directory. Files are not fsynced: a staged NAR is verified again
//! before it is reused, and narinfos are downloaded again on every fetch, so a file
//! torn by a power cut costs a download, never a wrong import.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use fleet_core::NarInfo;
use fleet_core::narinfo::nix_cache_info;

use super::FetchError;

const LOCK_FILE: &str = ".lock";
const NAR_DIR: &str = "nar";

/// An open, locked staging directory.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    /// Held for the life of the fetch; the lock goes with the descriptor.
    _lock: File,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError + use<> {
    let path = path.to_owned();
    move |source| FetchError::Staging {
        action,
        path,
        error: source,
    }
}

impl Staging {
    /// Creates (if needed), locks and tidies the staging directory `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, FetchError> {
        fs::create_dir_all(dir.join(NAR_DIR)).map_err(io_err("creating", dir))?;
        let dir = fs::canonicalize(dir).map_err(io_err("resolving", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(FetchError::StagingBusy { dir }),
            Err(e) => return Err(io_err("locking", &lock_path)(e.into())),
        }
        let staging = Self { dir, _lock: lock };
        staging.remove_temporaries()?;
        staging.write_file(Path::new("nix-cache-info"), nix_cache_info().as_bytes())?;
        Ok(staging)
    }

    /// The `file://` URL Nix reads the staged cache from.
    pub(crate) fn nix_url(&self) -> Result<String, FetchError> {
        let s = self.dir.to_str().filter(|s| {
            // Nix splits store URLs at these and does not decode them back.
            !s.contains(['?', '&', '#', '%', '=', ' ', '\n'])
        });
        match s {
            Some(s) => Ok(format!("file://{s}")),
            None => Err(FetchError::Staging {
                action: "using as a Nix store URL",
                path: self.dir.clone(),
                error: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the path is not UTF-8 or holds one of ? & # % = or whitespace, which Nix's store URLs cannot carry; choose a plain state directory",
                ),
            }),
        }
    }

    /// Where the NAR file of a narinfo `URL:` (already checked to be `nar/<name>`) is staged.
    pub(crate) fn nar_path(&self, url: &str) -> PathBuf {
        self.dir.join(url)
    }

    /// The directory NAR files are staged in.
    pub(crate) fn nar_dir(&self) -> PathBuf {
        self.dir.join(NAR_DIR)
    }

    /// Stages a verified narinfo as `<hash>.narinfo`.
    ///
    /// It is written from the parsed form, not as downloaded: Nix then reads exactly
    /// the fields fleet verified (with the file fields describing the staged file),
    /// so no difference between fleet's parser and Nix's (duplicate fields, spacing,
    /// line endings) can make Nix see another narinfo.
    pub(crate) fn write_narinfo(&self, ni: &NarInfo) -> Result<(), FetchError> {
        let name = format!("{}.narinfo", ni.store_path.hash());
        self.write_file(Path::new(&name), ni.to_text().as_bytes())
    }

    /// Writes `rel` (a file name in the directory) by temporary file and rename.
    fn write_file(&self, rel: &Path, bytes: &[u8]) -> Result<(), FetchError> {
        let path = self.dir.join(rel);
        let mut tmp = self.temp_file(&self.dir, rel)?;
        // Through the file itself: `NamedTempFile`'s own writes wrap the OS error
        // with the path, and a full disk would then not be told from other failures.
        tmp.as_file_mut()
            .write_all(bytes)
            .map_err(io_err("writing", &path))?;
        tmp.persist(&path)
            .map_err(|e| io_err("renaming into place", &path)(e.error))?;
        Ok(())
    }

    /// A hidden temporary file in `dir` for the final name `name`; removed on drop
    /// unless persisted, and by the next [`Staging::open`] after a kill.
    pub(crate) fn temp_file(
        &self,
        dir: &Path,
        name: &Path,
    ) -> Result<tempfile::NamedTempFile, FetchError> {
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name.file_name().unwrap_or_default());
        prefix.push(".");
        tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(io_err("creating a temporary file in", dir))
    }

    fn remove_temporaries(&self) -> Result<(), FetchError> {
        for dir in [self.dir.clone(), self.nar_dir()] {
            for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let name = entry.file_name();
                let name = name.as_encoded_bytes();
                if name.starts_with(b".") && name.ends_with(b".part") {
                    let p = entry.path();
                    fs::remove_file(&p).map_err(io_err("removing", &p))?;
                }
            }
        }
        Ok(())
    }

    /// Removes everything staged (after a successful import); keeps the directory
    /// and its lock file.
    pub(crate) fn clear(&self) -> Result<(), FetchError> {
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            if entry.file_name() == LOCK_FILE {
                continue;
            }
            let p = entry.path();
            let is_dir = entry
                .file_type()
                .map_err(io_err("inspecting", &p))?
                .is_dir();
            if is_dir {
                fs::remove_dir_all(&p).map_err(io_err("removing", &p))?;
            } else {
                fs::remove_file(&p).map_err(io_err("removing", &p))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_tidies_and_clears() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("staging");
        let s = Staging::open(&dir).unwrap();
        assert!(matches!(
            Staging::open(&dir),
            Err(FetchError::StagingBusy { .. })
        ));
        // A temporary file left by a kill, and a finished one.
        fs::write(s.nar_dir().join(".x.nar.zst.abc.part"), b"half").unwrap();
        fs::write(s.nar_dir().join("x.nar.zst"), b"whole").unwrap();
        drop(s);
        let s = Staging::open(&dir).unwrap();
        let mut names: Vec<_> = fs::read_dir(s.nar_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["x.nar.zst"]);
        assert_eq!(
            fs::read_to_string(dir.join("nix-cache-info")).unwrap(),
            nix_cache_info()
        );
        s.clear().unwrap();
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, [LOCK_FILE]);
    }

    #[test]
    fn refuses_paths_nix_cannot_parse_as_urls() {
        let d = tempfile::tempdir().unwrap();
        let s = Staging::open(&d.path().join("a b")).unwrap();
        assert!(matches!(s.nix_url(), Err(FetchError::Staging { .. })));
        let s = Staging::open(&d.path().join("ok")).unwrap();
        assert!(s.nix_url().unwrap().starts_with("file:///"));
    }
}
