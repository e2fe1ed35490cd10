//! Where the agent's S3 credentials come from.
//!
//! When systemd passes credentials (`LoadCredential=`, which sets
//! `$CREDENTIALS_DIRECTORY`), the agent reads these files there, each holding the
//! bare value (a trailing newline is ignored):
//!
//! | file | value |
//! |---|---|
//! | `aws-access-key-id` | the access key id (required with the next) |
//! | `aws-secret-access-key` | the secret access key |
//! | `aws-session-token` | optional, for temporary credentials |
//!
//! Without `$CREDENTIALS_DIRECTORY`, or when neither key file is in it, the agent uses
//! the standard AWS chain as before (`AWS_ACCESS_KEY_ID`, … in its environment, then
//! the instance metadata service). Credentials never reach the programs the agent
//! starts either way (see [`crate::childenv`]).

use std::path::Path;

use anyhow::{Context, bail};
use fleet_core::S3Credentials;

/// The environment variable systemd sets to the unit's credentials directory.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// File of the access key id in the credentials directory.
pub const ACCESS_KEY_ID_FILE: &str = "aws-access-key-id";
/// File of the secret access key in the credentials directory.
pub const SECRET_ACCESS_KEY_FILE: &str = "aws-secret-access-key";
/// File of the optional session token in the credentials directory.
pub const SESSION_TOKEN_FILE: &str = "aws-session-token";

/// Credentials from `$CREDENTIALS_DIRECTORY`, or `None` to use the AWS chain.
pub fn from_environment() -> anyhow::Result<Option<S3Credentials>> {
    match std::env::var_os(CREDENTIALS_DIRECTORY) {
        Some(dir) if !dir.is_empty() => from_directory(Path::new(&dir)),
        _ => Ok(None),
    }
}

/// Credentials from the files in `dir` (see the module docs), or `None` when neither
/// key file is there.
pub fn from_directory(dir: &Path) -> anyhow::Result<Option<S3Credentials>> {
    let id = read(dir, ACCESS_KEY_ID_FILE)?;
    let secret = read(dir, SECRET_ACCESS_KEY_FILE)?;
    let (access_key_id, secret_access_key) = match (id, secret) {
        (None, None) => return Ok(None),
        (Some(id), Some(secret)) => (id, secret),
        (Some(_), None) | (None, Some(_)) => bail!(
            "{} holds only one of {ACCESS_KEY_ID_FILE} and {SECRET_ACCESS_KEY_FILE}: give both (LoadCredential=) or neither",
            dir.display()
        ),
    };
    Ok(Some(S3Credentials {
        access_key_id,
        secret_access_key,
        session_token: read(dir, SESSION_TOKEN_FILE)?,
    }))
}

/// The trimmed content of `dir/name`; `None` if the file does not exist.
fn read(dir: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading credential {}", path.display())),
    };
    let value = text.trim();
    if value.is_empty() || value.contains(char::is_whitespace) {
        bail!(
            "credential {} must hold one value on one line",
            path.display()
        );
    }
    Ok(Some(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_and_half_a_pair_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(from_directory(d.path()).unwrap().is_none());
        std::fs::write(d.path().join(ACCESS_KEY_ID_FILE), "AKID\n").unwrap();
        let e = from_directory(d.path()).unwrap_err().to_string();
        assert!(e.contains("only one of"), "{e}");
        std::fs::write(d.path().join(SECRET_ACCESS_KEY_FILE), "s3cr3t").unwrap();
        let c = from_directory(d.path()).unwrap().unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKID", "s3cr3t")
        );
        assert_eq!(c.session_token, None);
        std::fs::write(d.path().join(SESSION_TOKEN_FILE), "tok\n").unwrap();
        let c = from_directory(d.path()).unwrap().unwrap();
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        std::fs::write(d.path().join(SESSION_TOKEN_FILE), "\n").unwrap();
        let e = from_directory(d.path()).unwrap_err().to_string();
        assert!(e.contains(SESSION_TOKEN_FILE), "{e}");
    }
}
