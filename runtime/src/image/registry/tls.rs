//! TLS for registries: the system's trusted roots, plus the certificates a user drops into
//! `certs.d/<host[:port]>/*.crt` for a registry with a private CA (Docker's convention).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the TLS configuration for a registry could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificates directory of the host could not be read.
    #[error("{}: {source}", .path.display())]
    Dir {
        /// `certs.d/<host>`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.crt` file does not hold PEM certificates.
    #[error("{}: {source}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused a certificate or the set-up.
    #[error("{}: {source}", .path.display())]
    Certificate {
        /// `certs.d/<host>`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The protocol versions could not be set.
    #[error("TLS set-up: {0}")]
    Setup(#[source] rustls::Error),
}

/// A client configuration trusting the system roots and `certs_dir/<host>/*.crt`.
pub fn client_config(
    certs_dir: Option<&Path>,
    host: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: the ones that load still count.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(dir) = certs_dir {
        for cert in host_certificates(&dir.join(host))? {
            roots.add(cert).map_err(|source| TlsError::Certificate {
                path: dir.join(host),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Every certificate in the `*.crt` files of `dir` (none if the directory is absent).
fn host_certificates(dir: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TlsError::Dir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut certs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "crt") {
            continue;
        }
        let pem = |source| TlsError::Pem {
            path: path.clone(),
            source,
        };
        for cert in CertificateDer::pem_file_iter(&path).map_err(pem)? {
            certs.push(cert.map_err(pem)?);
        }
    }
    Ok(certs)
}
