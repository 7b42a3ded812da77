//! `--web.config.file`: TLS and basic auth in the format of Prometheus's exporter-toolkit,
//! re-read when the file (or a certificate, key or CA file it names) changes.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt         # relative paths: relative to this file's directory
//!   key_file: server.key
//!   client_ca_file: ca.crt        # optional
//!   client_auth_type: RequireAndVerifyClientCert
//!   min_version: TLS12            # TLS12 (default) | TLS13
//! basic_auth_users:
//!   alice: $2y$10$...             # bcrypt hashes
//! ```
//!
//! Reload: [`WebConfig::reload_if_changed`] (run every [`WebConfig::reload_interval`] by
//! `serve`) hashes the file and the files the current config names; when the hash moved it
//! loads everything again, swaps the new config in for new connections and requests, or logs
//! the error and keeps the old one. Whether the listener speaks TLS is fixed at start: a new
//! file that adds or removes `tls_server_config` is refused like a broken one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use serde::Deserialize;

/// How often `serve` looks for a changed web config by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(3);
/// Cached basic-auth verdicts per config generation; the cache is emptied when full.
const AUTH_CACHE_ENTRIES: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: String,
    key_file: String,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
}

/// One loaded generation of the web config.
struct Loaded {
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<Arc<BasicAuth>>,
    /// The files this generation was built from (the config first).
    files: Vec<PathBuf>,
    /// SHA-256 over those files' bytes.
    fingerprint: [u8; 32],
}

/// The web config: the current generation and where it comes from.
pub struct WebConfig {
    path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    tls: bool,
    reload_interval: Duration,
    /// Fingerprint of the last broken content, logged once rather than on every check.
    last_failed: Mutex<Option<[u8; 32]>>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls)
            .field("basic_auth", &self.current.read().auth.is_some())
            .finish()
    }
}

impl WebConfig {
    /// Load `path`; the error names the file and what is wrong with it.
    pub fn load(path: impl AsRef<Path>) -> Result<WebConfig, String> {
        let path = path.as_ref().to_path_buf();
        let loaded = load(&path)?;
        Ok(WebConfig {
            tls: loaded.tls.is_some(),
            current: RwLock::new(Arc::new(loaded)),
            path,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            last_failed: Mutex::new(None),
        })
    }

    /// Check for changes every `d` instead of [`DEFAULT_RELOAD_INTERVAL`].
    pub fn with_reload_interval(mut self, d: Duration) -> WebConfig {
        self.reload_interval = d;
        self
    }

    pub fn reload_interval(&self) -> Duration {
        self.reload_interval
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the listener serves TLS (fixed at start).
    pub fn tls_enabled(&self) -> bool {
        self.tls
    }

    pub(crate) fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current.read().tls.clone()
    }

    pub(crate) fn basic_auth(&self) -> Option<Arc<BasicAuth>> {
        self.current.read().auth.clone()
    }

    /// Load the files again if their bytes changed. `Ok(true)`: a new config is in use;
    /// `Ok(false)`: nothing changed; `Err`: the new content is refused and the old config
    /// stays (the error is also logged, once per distinct content).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let cur = Arc::clone(&self.current.read());
        if fingerprint(&cur.files).ok() == Some(cur.fingerprint) {
            return Ok(false);
        }
        let res = load(&self.path).and_then(|new| {
            if new.tls.is_some() != self.tls {
                Err(format!(
                    "web config file {}: adding or removing tls_server_config needs a restart",
                    self.path.display()
                ))
            } else {
                Ok(new)
            }
        });
        match res {
            Ok(new) => {
                *self.current.write() = Arc::new(new);
                *self.last_failed.lock() = None;
                crate::log_info!("web config reloaded", file = self.path.display());
                Ok(true)
            }
            Err(e) => {
                // A fingerprint of what is on disk now, for logging once.
                let now = fingerprint(std::slice::from_ref(&self.path)).ok();
                let mut last = self.last_failed.lock();
                if *last != now || now.is_none() {
                    crate::log_error!(
                        "web config reload failed; keeping the previous one",
                        err = e
                    );
                    *last = now;
                }
                Err(e)
            }
        }
    }

    /// Check for changes forever (`serve` runs this as a task and aborts it at the end).
    pub(crate) async fn reload_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let me = Arc::clone(&self);
            // File reads and certificate parsing: off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
        }
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn fingerprint(files: &[PathBuf]) -> std::io::Result<[u8; 32]> {
    let contents = files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<Vec<_>>>()?;
    let parts: Vec<&[u8]> = contents.iter().map(|c| c.as_slice()).collect();
    Ok(sha256(&parts))
}

/// Reads files and remembers what it read, for the fingerprint.
struct Reader {
    files: Vec<PathBuf>,
    contents: Vec<Vec<u8>>,
}

impl Reader {
    fn read(&mut self, path: PathBuf, what: &str) -> Result<&[u8], String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        self.files.push(path);
        self.contents.push(bytes);
        Ok(self.contents.last().map_or(&[], |c| c.as_slice()))
    }
}

fn load(path: &Path) -> Result<Loaded, String> {
    let ctx = |e: String| format!("web config file {}: {e}", path.display());
    let mut rd = Reader {
        files: Vec::new(),
        contents: Vec::new(),
    };
    let text = rd.read(path.to_path_buf(), "web config file")?;
    let text = std::str::from_utf8(text).map_err(|e| ctx(format!("not UTF-8: {e}")))?;
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| ctx(e.to_string()))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = match &file.tls_server_config {
        Some(t) => Some(Arc::new(build_tls(t, dir, &mut rd).map_err(ctx)?)),
        None => None,
    };
    let auth = match file.basic_auth_users {
        Some(users) => Some(Arc::new(BasicAuth::new(users).map_err(ctx)?)),
        None => None,
    };
    let parts: Vec<&[u8]> = rd.contents.iter().map(|c| c.as_slice()).collect();
    Ok(Loaded {
        tls,
        auth,
        fingerprint: sha256(&parts),
        files: rd.files,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

fn build_tls(t: &TlsFile, dir: &Path, rd: &mut Reader) -> Result<rustls::ServerConfig, String> {
    let resolve = |p: &str| -> Result<PathBuf, String> {
        if p.is_empty() {
            return Err("tls_server_config: empty file name".into());
        }
        Ok(dir.join(p))
    };
    let cert_path = resolve(&t.cert_file)?;
    let certs =
        CertificateDer::pem_slice_iter(rd.read(cert_path.clone(), "tls_server_config.cert_file")?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file {}: no PEM certificate",
            cert_path.display()
        ));
    }
    let key_path = resolve(&t.key_file)?;
    let key =
        PrivateKeyDer::from_pem_slice(rd.read(key_path.clone(), "tls_server_config.key_file")?)
            .map_err(|e| format!("tls_server_config.key_file {}: {e}", key_path.display()))?;

    let auth_type = match t.client_auth_type.as_deref() {
        None | Some("") if t.client_ca_file.is_some() => ClientAuth::RequireAndVerifyClientCert,
        None | Some("") | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("RequestClientCert") => ClientAuth::RequestClientCert,
        Some("RequireAnyClientCert") => ClientAuth::RequireAnyClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type: invalid {other:?}: want NoClientCert, \
                 RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                 RequireAndVerifyClientCert"
            ))
        }
    };
    let versions: &[&'static rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("") | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            return Err(format!(
                "tls_server_config.min_version: unsupported {other:?}: want TLS12 or TLS13"
            ))
        }
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &t.client_ca_file {
        let ca_path = resolve(ca)?;
        let what = "tls_server_config.client_ca_file";
        for c in CertificateDer::pem_slice_iter(rd.read(ca_path.clone(), what)?) {
            let c = c.map_err(|e| format!("{what} {}: {e}", ca_path.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("{what} {}: {e}", ca_path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{what} {}: no PEM certificate", ca_path.display()));
        }
    }
    let verifier: Arc<dyn ClientCertVerifier> = match auth_type {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Arc::new(AnyClientCert {
                mandatory: auth_type == ClientAuth::RequireAnyClientCert,
                algs: provider.signature_verification_algorithms,
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            if roots.is_empty() {
                return Err(format!(
                    "tls_server_config.client_ca_file is required with client_auth_type {auth_type:?}"
                ));
            }
            let b =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let b = if auth_type == ClientAuth::VerifyClientCertIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!("tls_server_config: cert_file and key_file do not make a usable pair: {e}")
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// `RequestClientCert` / `RequireAnyClientCert`: ask for a certificate, check only that the
/// client holds its key (Go's semantics: the chain is not verified).
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `basic_auth_users` of one config generation, with a bounded cache of verdicts keyed by
/// SHA-256(user, password): a sender that presents the same credentials on every request pays
/// bcrypt once per generation, not per request. Wrong passwords are cached too (a sender with
/// a stale password does not burn a core); the cache is emptied when it reaches
/// [`AUTH_CACHE_ENTRIES`], so a stream of guesses costs bcrypt each, as without a cache.
pub(crate) struct BasicAuth {
    users: HashMap<String, String>,
    cache: Mutex<HashMap<[u8; 32], bool>>,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, String> {
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("basic_auth_users.{user}: not a bcrypt hash ({e})"))?;
        }
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `user`:`password` is valid. bcrypt runs on the blocking pool.
    pub(crate) async fn verify(self: &Arc<Self>, user: &str, password: &[u8]) -> bool {
        let key = sha256(&[user.as_bytes(), password]);
        if let Some(&ok) = self.cache.lock().get(&key) {
            return ok;
        }
        let me = Arc::clone(self);
        let user = user.to_string();
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || match me.users.get(&user) {
            Some(hash) => bcrypt::verify(&password, hash).unwrap_or(false),
            None => {
                // Same cost as a known user, so timing does not tell which users exist.
                let _ = bcrypt::verify(&password, dummy_hash());
                false
            }
        })
        .await
        .unwrap_or(false);
        let mut cache = self.cache.lock();
        if cache.len() >= AUTH_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, ok);
        ok
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| bcrypt::hash("cairn", bcrypt::DEFAULT_COST).unwrap_or_default())
}
