//! A real registry for the image tests: Debian's `docker-registry` started on 127.0.0.1
//! with its own storage directory, filled with `skopeo copy` from OCI layouts built here
//! (layer by layer, so a test controls compression, whiteouts, platforms and hostile
//! content).

use crate::TestEnv;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` process serving 127.0.0.1:<port> until dropped.
pub struct LocalRegistry {
    child: Child,
    token_server: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    netns: String,
}

/// How the test registry authenticates clients.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// Open to all.
    Open,
    /// `htpasswd` basic auth for (user, password).
    Basic(&'a str, &'a str),
    /// Bearer tokens from `tests/fixtures/token_server.py`, granted to (user, password).
    Token(&'a str, &'a str),
    /// Open, but served over TLS only, with a certificate from a CA made for the test
    /// ([`LocalRegistry::ca_certificate`]).
    Tls,
}

impl LocalRegistry {
    /// Starts an open registry.
    pub fn start(env: &TestEnv) -> LocalRegistry {
        LocalRegistry::start_with_auth(env, Auth::Open)
    }

    /// Starts a registry that authenticates as `auth` says, on 127.0.0.1 of `env`'s
    /// network namespace (where capsa runs).
    pub fn start_with_auth(env: &TestEnv, auth_kind: Auth<'_>) -> LocalRegistry {
        let dir = tempfile::Builder::new()
            .prefix("capsa-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut auth = String::new();
        let mut tls = String::new();
        let mut token_server = None;
        match auth_kind {
            Auth::Open => {}
            Auth::Basic(user, password) => {
                let htpasswd = dir.path().join("htpasswd");
                let out = Command::new("htpasswd")
                    .args(["-Bbc", htpasswd.to_str().unwrap(), user, password])
                    .output()
                    .expect("htpasswd (apache2-utils) is installed by scripts/setup.sh");
                assert!(out.status.success(), "htpasswd: {:?}", out);
                auth = format!(
                    "auth:\n  htpasswd:\n    realm: capsa-test\n    path: {}\n",
                    htpasswd.display()
                );
            }
            Auth::Tls => {
                let (cert, key) = make_tls_certificate(dir.path());
                tls = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                );
            }
            Auth::Token(user, password) => {
                let (server, realm, cert) = start_token_server(env, dir.path(), user, password);
                token_server = Some(server);
                auth = format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: capsa-test\n    issuer: capsa-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                );
            }
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = env
            .host_command("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry is installed by scripts/setup.sh");
        let reg = LocalRegistry {
            child,
            token_server,
            dir,
            port,
            netns: env.netns().to_string(),
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let tls = self.dir.path().join("ca.crt").exists();
        while Instant::now() < deadline {
            let port = self.port;
            let ready = in_netns(&self.netns, move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return false;
                };
                // TLS: being accepted is enough (no HTTP client here speaks TLS).
                if tls {
                    return true;
                }
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer.starts_with("HTTP/1.")
            });
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!(
            "docker-registry did not answer on port {}: {log}",
            self.port
        );
    }

    /// The CA certificate that signed a TLS registry's certificate.
    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `layout`'s reference `tag` (all platforms) to `repo:tag` with skopeo.
    pub fn push(&self, layout: &OciLayout, tag: &str, repo: &str) {
        self.push_as(layout, tag, repo, None);
    }

    /// [`push`](Self::push) with credentials.
    pub fn push_as(&self, layout: &OciLayout, tag: &str, repo: &str, creds: Option<&str>) {
        let creds: Vec<&str> = creds.map(|c| vec!["--dest-creds", c]).unwrap_or_default();
        self.push_with(layout, tag, repo, &creds);
    }

    /// [`push`](Self::push) with more skopeo flags (`--format v2s2` for Docker's types).
    pub fn push_with(&self, layout: &OciLayout, tag: &str, repo: &str, extra: &[&str]) {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("skopeo");
        cmd.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        cmd.args(extra);
        let src = format!("oci:{}:{tag}", layout.dir.display());
        let dest = format!("docker://{}/{repo}:{tag}", self.host());
        let out = cmd
            .arg(&src)
            .arg(&dest)
            .output()
            .expect("skopeo is installed by scripts/setup.sh");
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The registry's folder of repository `repo` (its tags and its links to blobs).
    pub fn repository_dir(&self, repo: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
    }

    /// The file where the registry keeps blob `digest`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.token_server.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes a CA and, signed by it, a server certificate for 127.0.0.1; returns the server's
/// certificate and key paths (the CA is `dir/ca.crt`).
fn make_tls_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=capsa test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    (dir.join("server.crt"), dir.join("server.key"))
}

/// Makes a signing key and certificate and starts the token issuer; returns it, its realm
/// URL and the certificate the registry must trust.
fn start_token_server(
    env: &TestEnv,
    dir: &Path,
    user: &str,
    password: &str,
) -> (Child, String, PathBuf) {
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=capsa-test-issuer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/token_server.py");
    let child = env
        .host_command("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&key)
        .arg(&cert)
        .args(["capsa-test-issuer", user, password])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !in_netns(env.netns(), move || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }) {
        assert!(Instant::now() < deadline, "token server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}/token"), cert)
}

/// A scripted hostile registry or token realm (`tests/fixtures/hostile_registry.py`) on
/// `address:port` of a test's network namespace, logging every request it gets.
pub struct HostileServer {
    child: Child,
    log: tempfile::NamedTempFile,
    address: String,
    port: u16,
}

impl HostileServer {
    /// Starts one answering as `mode` says (`bearer` sends clients to `realm`).
    pub fn start(env: &TestEnv, address: &str, mode: &str, realm: &str) -> HostileServer {
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile_registry.py");
        let child = env
            .host_command("python3")
            .arg(script)
            .args([address, &port.to_string(), mode])
            .arg(log.path())
            .arg(realm)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = address.to_string();
        loop {
            let a = addr.clone();
            if in_netns(env.netns(), move || {
                TcpStream::connect((a.as_str(), port)).is_ok()
            }) {
                break;
            }
            assert!(Instant::now() < deadline, "hostile server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        HostileServer {
            child,
            log,
            address: addr,
            port,
        }
    }

    /// `address:port`.
    pub fn host(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// Every request so far: `METHOD PATH AUTHORIZATION` (`-` when none was sent).
    pub fn requests(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on a thread that has joined network namespace `netns` (only that thread
/// changes namespace).
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we own, affecting this thread only.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// A port nobody listens on now (the registry takes it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a test layer is compressed.
#[derive(Debug, Clone, Copy)]
pub enum Packing {
    /// Plain tar.
    Plain,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// A layer descriptor and the diff ID its config entry needs.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    /// The OCI descriptor (media type, digest, size).
    pub descriptor: Value,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

/// An OCI image layout directory written blob by blob.
pub struct OciLayout {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    index: Vec<Value>,
}

/// `sha256:<hex>` of bytes.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl Default for OciLayout {
    fn default() -> Self {
        OciLayout::new()
    }
}

impl OciLayout {
    /// An empty layout.
    pub fn new() -> OciLayout {
        let tmp = tempfile::Builder::new()
            .prefix("capsa-oci-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("layout");
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout {
            dir,
            _tmp: tmp,
            index: Vec::new(),
        }
    }

    /// Stores a blob; returns its descriptor with `media_type`.
    pub fn blob(&self, media_type: &str, data: &[u8]) -> Value {
        let digest = sha256(data);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::write(path, data).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": data.len()})
    }

    /// Adds a layer from a tar stream.
    pub fn layer(&self, tar: &[u8], packing: Packing) -> BuiltLayer {
        let (data, media_type) = match packing {
            Packing::Plain => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
            Packing::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).unwrap();
                (
                    gz.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Packing::Zstd => (
                zstd::encode_all(tar, 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        BuiltLayer {
            descriptor: self.blob(media_type, &data),
            diff_id: sha256(tar),
        }
    }

    /// Adds an image manifest for `arch` with `layers` and the image config `config`
    /// (Cmd, Env...); returns the manifest's descriptor (with its platform).
    pub fn image(&self, arch: &str, layers: &[BuiltLayer], config: Value) -> Value {
        let cfg = json!({
            "architecture": arch,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": layers.iter().enumerate().map(|(i, _)| json!({"created": "2026-01-01T00:00:00Z", "created_by": format!("test layer {i}")})).collect::<Vec<_>>(),
        });
        let cfg_desc = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&cfg).unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg_desc,
            "layers": layers.iter().map(|l| l.descriptor.clone()).collect::<Vec<_>>(),
        });
        let mut desc = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        desc["platform"] = json!({"os": "linux", "architecture": arch});
        desc
    }

    /// Names `manifest` (or index) descriptor `tag` in `index.json`.
    pub fn tag(&mut self, tag: &str, mut desc: Value) {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.index.push(desc);
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// Adds an index over `manifests` (platform-tagged descriptors); returns its descriptor.
    pub fn index_of(&self, manifests: &[Value]) -> Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
    }

    /// The layout's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Builds a tar stream from (path, contents) pairs: regular files, with `None` for a
/// directory. Names are written verbatim, so a test can write `../x` as an attacker would.
pub fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(d.len() as u64);
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
            }
        }
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data.unwrap_or(&[])).unwrap();
    }
    b.into_inner().unwrap()
}
