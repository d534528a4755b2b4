//! Tags and referrers: paginated tag lists, the referrers API, tag deletion.

use super::client::{Client, MAX_MANIFEST_BYTES, RegistryError, Repository};
use super::transport::{read_json, with_auth};
use crate::oci::{Digest, media};

impl Client {
    /// Every tag, following `Link: rel="next"` pages; stops on a repeated page
    /// (registries that ignore `n`/`last` send the whole list every time).
    pub fn list_tags(&self, repo: &Repository) -> Result<Vec<String>, RegistryError> {
        let mut url = repo.url("tags/list?n=1000");
        let mut tags: Vec<String> = Vec::new();
        let mut seen_urls = std::collections::HashSet::new();
        loop {
            if !seen_urls.insert(url.clone()) {
                break;
            }
            let current = url.clone();
            let resp = self.send(repo, "tag list", &Self::pull(repo), &|a, auth| {
                with_auth(a.get(&current), auth).call()
            })?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(Vec::new()),
                _ => return Err(Self::status_err(repo, "tag list", resp)),
            }
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let v = read_json(resp, 64 << 20).map_err(|e| Self::err(repo, "tag list", e))?;
            let page: Vec<String> = v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let before = tags.len();
            for t in page {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            match next {
                Some(n) if tags.len() > before => url = repo.resolve(&n),
                _ => break,
            }
        }
        Ok(tags)
    }

    /// The manifests that refer to `digest` (OCI 1.1 referrers API); `None`
    /// when the registry does not offer it (CNCF Distribution 2.x answers 404).
    pub fn referrers(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Option<Vec<crate::oci::Descriptor>>, RegistryError> {
        let op = format!("referrers {digest}");
        let url = repo.url(&format!("referrers/{digest}"));
        let resp = self.send(repo, &op, &Self::pull(repo), &|a, auth| {
            with_auth(a.get(&url), auth)
                .header("Accept", media::INDEX)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => {
                let v = read_json(resp, MAX_MANIFEST_BYTES).map_err(|e| Self::err(repo, &op, e))?;
                let list = v["manifests"].as_array().cloned().unwrap_or_default();
                list.into_iter()
                    .map(|d| {
                        serde_json::from_value(d).map_err(|e| Self::err(repo, &op, e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            404 | 405 => Ok(None),
            _ => Err(Self::status_err(repo, &op, resp)),
        }
    }

    /// Deletes a tag alone (OCI 1.1 `DELETE /manifests/<tag>`); `false` when
    /// the registry does not support it (Distribution answers 400).
    pub fn delete_tag(&self, repo: &Repository, tag: &str) -> Result<bool, RegistryError> {
        let op = format!("tag DELETE {tag}");
        let url = repo.url(&format!("manifests/{tag}"));
        let scope = format!("repository:{}:delete,pull,push", repo.path);
        let resp = self.send(repo, &op, &scope, &|a, auth| {
            with_auth(a.delete(&url), auth).call()
        })?;
        Ok(matches!(resp.status().as_u16(), 200 | 202 | 204))
    }
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
    }
}
