//! TLS for a registry with certificates of its own (`certs.d`), verified
//! as skopeo and podman verify them: against the directory's certificates
//! as roots, and a certificate placed there that is the server's own — a
//! self-signed one as `openssl req -x509` makes it, which marks itself a CA
//! (`CA:TRUE`) — trusted as exactly itself, for the names it carries.
//! Registries without such a directory use ureq's own TLS.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

/// The web PKI over the directory's certificates, and those certificates
/// themselves when the server presents one of them.
#[derive(Debug)]
struct OwnCertificates {
    inner: Arc<WebPkiServerVerifier>,
    own: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for OwnCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused =
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
        if !self.own.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Err(refused);
        }
        // The very certificate the user placed for this host: trusted as
        // itself, for the names it was made for, while it is valid.
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| refused.clone())?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|_| refused.clone())?;
        if !valid_at(end_entity, now) {
            return Err(refused);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `now` lies within the certificate's validity, read from its DER
/// (`notBefore`/`notAfter` of the TBSCertificate).
fn valid_at(der: &[u8], now: UnixTime) -> bool {
    let Some((not_before, not_after)) = validity(der) else {
        return false;
    };
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    not_before <= now && now <= not_after
}

/// One DER element at `pos`: (tag, content start, content end).
fn element(der: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
    let tag = *der.get(pos)?;
    let first = *der.get(pos + 1)?;
    let (len, start) = if first < 0x80 {
        (usize::from(first), pos + 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*der.get(pos + 2 + i)?);
        }
        (len, pos + 2 + n)
    };
    let end = start.checked_add(len).filter(|e| *e <= der.len())?;
    Some((tag, start, end))
}

fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = element(der, 0)?;
    let (_, tbs, tbs_end) = element(der, cert)?;
    let mut pos = tbs;
    // [0] version (optional), serialNumber, signature, issuer, validity.
    let mut field = 0;
    while pos < tbs_end {
        let (tag, start, end) = element(der, pos)?;
        if tag == 0xa0 {
            pos = end;
            continue;
        }
        if field == 3 {
            let (t1, s1, e1) = element(der, start)?;
            let (t2, s2, e2) = element(der, e1)?;
            return Some((time(t1, &der[s1..e1])?, time(t2, &der[s2..e2])?));
        }
        field += 1;
        pos = end;
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) → seconds since 1970.
fn time(tag: u8, v: &[u8]) -> Option<i64> {
    // Digits only: a field of other bytes is no time (and is never sliced).
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let full = match tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            format!("{}{s}", if yy < 50 { "20" } else { "19" })
        }
        0x18 if s.len() == 14 => s.to_owned(),
        _ => return None,
    };
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    crate::oci::parse_rfc3339(&rfc)
}

/// The TLS configuration for a host whose `certs.d` directory holds `certs`.
pub fn config(certs: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err("no certificate there can be used".into());
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier = OwnCertificates {
        inner,
        own: certs.to_vec(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An agent's connections: ureq's proxy and TCP, then this TLS.
pub fn connector(config: Arc<ClientConfig>) -> impl Connector<(), Out = impl Transport> {
    ().chain(ConnectProxyConnector::default())
        .chain(TcpConnector::default())
        .chain(Tls(config))
}

struct Tls(Arc<ClientConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(certs.d)")
    }
}

impl<In: Transport> Connector<In> for Tls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name =
            ServerName::try_from(host).map_err(|_| ureq::Error::Tls("invalid server name"))?;
        let mut conn = ClientConnection::new(self.0.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
        })))
    }
}

pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_times_read_both_forms() {
        assert_eq!(
            time(0x17, b"260102030405Z"),
            crate::oci::parse_rfc3339("2026-01-02T03:04:05Z")
        );
        assert_eq!(
            time(0x18, b"20500102030405Z"),
            crate::oci::parse_rfc3339("2050-01-02T03:04:05Z")
        );
        assert_eq!(time(0x17, b"2601020304Z"), None);
        assert_eq!(time(0x17, "26010203é5Z".as_bytes()), None, "never a panic");
        assert_eq!(
            element(&[0x30, 0x85, 0, 0, 0, 0, 0], 0),
            None,
            "lengths over 4 bytes"
        );
    }
}
