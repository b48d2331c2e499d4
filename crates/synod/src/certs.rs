//! Throwaway certificates for `synod dev --tls` and the TLS tests (`synod certs`, hidden): a
//! CA, a server certificate for loopback (SANs `127.0.0.1`, `localhost`; usable as a peer's
//! client certificate too) and a client certificate with CN `root` (etcd maps a client
//! certificate's CN to a user, so auth can use it). Written as PEM files with rcgen.
//! Not for production: the CA key sits next to the certificates, unencrypted.

use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where [`generate`] put the files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path) -> Self {
        CertFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory to write ca.pem, server.pem, server-key.pem, client.pem, client-key.pem into.
    #[arg(long)]
    dir: PathBuf,
    /// Common name of the CA (tests make a second, foreign CA under another name).
    #[arg(long, default_value = "synod dev CA")]
    ca_name: String,
}

pub fn run(args: CertsArgs) -> ExitCode {
    match generate(&args.dir, &args.ca_name) {
        Ok(files) => {
            println!("{}", files.ca.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod certs: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A leaf certificate's parameters: signed for both server and client use, so one file serves
/// a member as TLS server (its ports) and as TLS client (dialing its peers).
fn leaf(common_name: &str, sans: &[&str]) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(p)
}

/// Writes a fresh CA named `ca_name` and certificates it signed into `dir`.
pub fn generate(dir: &Path, ca_name: &str) -> anyhow::Result<CertFiles> {
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let files = CertFiles::in_dir(dir);
    let server_key = KeyPair::generate()?;
    let server =
        leaf("synod", &["127.0.0.1", "localhost"])?.signed_by(&server_key, &ca_cert, &ca_key)?;
    let client_key = KeyPair::generate()?;
    let client = leaf("root", &[])?.signed_by(&client_key, &ca_cert, &ca_key)?;

    write(&files.ca, &ca_cert.pem())?;
    write(&dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
    // Key before certificate: a server reloading in between sees the old pair or a mismatch
    // it refuses (and keeps the old pair), never a certificate without its key.
    write(&files.server_key, &server_key.serialize_pem())?;
    write(&files.server_cert, &server.pem())?;
    write(&files.client_key, &client_key.serialize_pem())?;
    write(&files.client_cert, &client.pem())?;
    Ok(files)
}

/// Writes through a temporary file and a rename, so a reader sees the old file or the new one.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
