//! TLS for registries: the system's trusted roots, plus the certificates a user drops into
//! `certs.d/<host[:port]>/*.crt` for a registry with a private CA (Docker's convention).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// A client configuration trusting the system roots and `certs_dir/<host>/*.crt`.
pub fn client_config(
    certs_dir: Option<&Path>,
    host: &str,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: the ones that load still count.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(dir) = certs_dir {
        for cert in host_certificates(&dir.join(host))? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", dir.join(host).display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Every certificate in the `*.crt` files of `dir` (none if the directory is absent).
fn host_certificates(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut certs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "crt") {
            continue;
        }
        let iter =
            CertificateDer::pem_file_iter(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in iter {
            certs.push(cert.map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    Ok(certs)
}
