//! The development signing secret: random, created on first start in the data directory,
//! shared by `platform up`, `platform token` and standalone services on the same folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::RngCore;
use secrecy::SecretString;

const FILE_NAME: &str = "dev-jwt-secret";

#[derive(Debug, thiserror::Error)]
pub enum DevSecretError {
    #[error("development secret {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("development secret {0} is empty; delete it to have a new one made")]
    Empty(PathBuf),
}

/// Reads `<data_dir>/dev-jwt-secret`, creating it (mode 0600) with 32 random bytes when absent.
pub fn load_or_create_dev_secret(data_dir: &Path) -> Result<SecretString, DevSecretError> {
    let path = data_dir.join(FILE_NAME);
    let io = |source| DevSecretError::Io {
        path: path.clone(),
        source,
    };
    crate::private_files::create_private_dir(data_dir).map_err(io)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let fresh = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(fresh.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(SecretString::from(fresh))
        }
        // Another process made it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(DevSecretError::Empty(path));
            }
            Ok(SecretString::from(secret.to_owned()))
        }
        Err(error) => Err(io(error)),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_dev_secret(dir.path()).unwrap();
        let second = load_or_create_dev_secret(dir.path()).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().len() >= 40);
        let other = tempfile::tempdir().unwrap();
        let third = load_or_create_dev_secret(other.path()).unwrap();
        assert_ne!(first.expose_secret(), third.expose_secret());
    }
}
