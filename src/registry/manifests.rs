//! Manifests: read (size-capped, digest-verified), write (digest checked
//! against the registry's answer), delete.

use std::io::Read;

use super::client::{
    Client, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, Manifest, RegistryError, Repository,
};
use super::transport::with_auth;
use crate::oci::{Digest, media};

impl Client {
    /// Stores a manifest under a tag or digest; the registry's digest is checked.
    pub fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        self.put_manifest_headers(repo, reference, media_type, bytes)
            .map(|(d, _)| d)
    }

    /// Stores a manifest that has a `subject` by its digest; `true` when the
    /// registry indexed it for the referrers API (it answered `OCI-Subject`).
    pub fn put_referrer_manifest(
        &self,
        repo: &Repository,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<bool, RegistryError> {
        let (stored, subject) =
            self.put_manifest_headers(repo, &digest.to_string(), media_type, bytes)?;
        if stored != *digest {
            return Err(Self::err(
                repo,
                "referrer PUT",
                format!("the manifest is {stored}, not {digest}"),
            ));
        }
        Ok(subject)
    }

    fn put_manifest_headers(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(Digest, bool), RegistryError> {
        let op = format!("manifest PUT {reference}");
        let url = repo.url(&format!("manifests/{reference}"));
        let resp = self.send(repo, &op, &Self::push(repo), &|a, auth| {
            with_auth(a.put(&url), auth)
                .header("Content-Type", media_type)
                .send(bytes)
        })?;
        if !matches!(resp.status().as_u16(), 200..=202) {
            return Err(Self::status_err(repo, &op, resp));
        }
        let digest = Digest::of(bytes);
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && d != digest.to_string()
        {
            return Err(Self::err(
                repo,
                &op,
                format!("the registry stored {d}, we sent {digest}"),
            ));
        }
        let subject = resp.headers().contains_key("oci-subject");
        Ok((digest, subject))
    }

    /// The digest, media type and size a tag or digest resolves to; `None` if absent.
    pub fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<(Digest, String, u64)>, RegistryError> {
        let op = format!("manifest HEAD {reference}");
        let url = repo.url(&format!("manifests/{reference}"));
        let resp = self.send(repo, &op, &Self::pull(repo), &|a, auth| {
            with_auth(a.head(&url), auth)
                .header("Accept", MANIFEST_ACCEPT)
                .call()
        })?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => {
                let h = resp.headers();
                let digest = h
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|d| d.parse().ok());
                let mt = h
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(media::MANIFEST)
                    .to_owned();
                let size = h
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                match digest {
                    Some(d) => Ok(Some((d, mt, size))),
                    // Without the header, read the manifest and hash it.
                    None => self
                        .get_manifest(repo, reference)
                        .map(|m| m.map(|m| (m.digest, m.media_type, m.bytes.len() as u64))),
                }
            }
            _ => Err(Self::status_err(repo, &op, resp)),
        }
    }

    /// Reads a manifest (at most 4 MiB), verifying its digest.
    pub fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<Manifest>, RegistryError> {
        let op = format!("manifest GET {reference}");
        let url = repo.url(&format!("manifests/{reference}"));
        let resp = self.send(repo, &op, &Self::pull(repo), &|a, auth| {
            with_auth(a.get(&url), auth)
                .header("Accept", MANIFEST_ACCEPT)
                .call()
        })?;
        match resp.status().as_u16() {
            404 => return Ok(None),
            200 => {}
            _ => return Err(Self::status_err(repo, &op, resp)),
        }
        let mt = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(media::MANIFEST)
            .to_owned();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        crate::http::Stalled::new(resp.into_body().into_reader())
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Self::err(repo, &op, e.to_string()))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Self::err(
                repo,
                &op,
                format!("manifest larger than {MAX_MANIFEST_BYTES} bytes, refused"),
            ));
        }
        let digest = Digest::of(&bytes);
        let expected = reference
            .parse::<Digest>()
            .ok()
            .map(|d| d.to_string())
            .or(header_digest);
        if let Some(e) = expected
            && e != digest.to_string()
        {
            return Err(Self::err(
                repo,
                &op,
                format!("content digest {digest} does not match {e}"),
            ));
        }
        Ok(Some(Manifest {
            media_type: mt,
            digest,
            bytes,
        }))
    }

    pub fn delete_manifest(&self, repo: &Repository, digest: &Digest) -> Result<(), RegistryError> {
        let op = format!("manifest DELETE {digest}");
        let url = repo.url(&format!("manifests/{digest}"));
        let scope = format!("repository:{}:delete,pull,push", repo.path);
        let resp = self.send(repo, &op, &scope, &|a, auth| {
            with_auth(a.delete(&url), auth).call()
        })?;
        match resp.status().as_u16() {
            200 | 202 | 204 | 404 => Ok(()),
            _ => Err(Self::status_err(repo, &op, resp)),
        }
    }
}
