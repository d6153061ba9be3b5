//! The upload half of the distribution API, as `push` speaks it: `HEAD` for a blob the
//! repository has, a cross-repository mount, an upload session (`POST`, `PATCH` chunks with
//! `Content-Range`, then `PUT ?digest=`), and the manifest `PUT`.
//!
//! Every request asks for the push scope (`repository:<repo>:pull,push`; a mount also asks
//! to pull from the repository it mounts from). A session's URL is the registry's
//! `Location`: credentials go with it only when it is on the registry's own origin, since a
//! registry may hand uploads to another host, which gets no password or token. A registry
//! open to anonymous reads may answer `GET /v2/` without a challenge and send one with the
//! first push request's 401: it is learned then, and that request sent again.

use super::{error_message, Registry, RegistryError};
use std::io::Read;

/// An open upload session: where its next request goes, and how many bytes it holds.
#[derive(Debug)]
pub struct Upload {
    location: String,
    offset: u64,
}

impl Upload {
    /// Bytes the registry has received in this session.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// What a mount request came to.
#[derive(Debug)]
pub enum Mount {
    /// The registry linked the blob from the other repository: nothing to upload.
    Mounted,
    /// It could not (the blob is not there or not readable by this user) and opened an
    /// upload session instead, as the distribution spec says it may.
    Upload(Upload),
}

/// A request body.
enum Body<'a> {
    /// No body at all (`HEAD`).
    Nothing,
    /// A small body held in memory (`Content-Length` set).
    Bytes(&'a [u8]),
    /// A stream of exactly this many bytes, sent as it is read.
    Stream(&'a mut dyn Read, u64),
}

/// `repository:<repo>:pull,push`.
fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Registry {
    /// Whether `repo` has the blob `digest` already (`HEAD`: 200 yes, 404 no).
    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let what = format!("blob {digest} of {}/{repo}", self.host);
        match self.send("HEAD", &url, &push_scope(repo), &what, &[], Body::Nothing) {
            Ok(_) => Ok(true),
            Err(RegistryError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the registry to link blob `digest` of repository `from` into `repo`.
    pub fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<Mount, RegistryError> {
        let url = format!(
            "{}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}",
            self.base
        );
        let scope = format!("{} repository:{from}:pull", push_scope(repo));
        let what = format!(
            "mount of blob {digest} from {from} into {}/{repo}",
            self.host
        );
        let resp = self.send("POST", &url, &scope, &what, &[], Body::Bytes(&[]))?;
        if resp.status() == 201 {
            return Ok(Mount::Mounted);
        }
        Ok(Mount::Upload(self.session(&resp, 0, &what)?))
    }

    /// Opens an upload session in `repo`.
    pub fn start_upload(&self, repo: &str) -> Result<Upload, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let what = format!("upload to {}/{repo}", self.host);
        let resp = self.send(
            "POST",
            &url,
            &push_scope(repo),
            &what,
            &[],
            Body::Bytes(&[]),
        )?;
        self.session(&resp, 0, &what)
    }

    /// Sends the next `len` bytes of the blob (`len` > 0) from `chunk`, as they are read.
    pub fn upload_chunk(
        &self,
        repo: &str,
        upload: &mut Upload,
        chunk: &mut dyn Read,
        len: u64,
        what: &str,
    ) -> Result<(), RegistryError> {
        let range = format!("{}-{}", upload.offset, upload.offset + len.max(1) - 1);
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", range.as_str()),
        ];
        let url = upload.location.clone();
        let resp = self.send(
            "PATCH",
            &url,
            &push_scope(repo),
            what,
            &headers,
            Body::Stream(chunk, len),
        )?;
        *upload = self.session(&resp, upload.offset + len, what)?;
        Ok(())
    }

    /// Closes the session: the registry checks that what it received has `digest`.
    pub fn finish_upload(
        &self,
        repo: &str,
        upload: Upload,
        digest: &str,
        what: &str,
    ) -> Result<(), RegistryError> {
        let separator = if upload.location.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{separator}digest={digest}", upload.location);
        self.send("PUT", &url, &push_scope(repo), what, &[], Body::Bytes(&[]))?;
        Ok(())
    }

    /// Puts a manifest under `tag`, as `media_type`; returns the digest the registry says
    /// it stored it under (`Docker-Content-Digest`), when it says.
    pub fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        let what = format!("manifest {}/{repo}:{tag}", self.host);
        let headers = [("Content-Type", media_type)];
        let resp = self.send(
            "PUT",
            &url,
            &push_scope(repo),
            &what,
            &headers,
            Body::Bytes(bytes),
        )?;
        Ok(resp.header("Docker-Content-Digest").map(str::to_string))
    }

    /// The session an answer names in its `Location`, holding `offset` bytes.
    fn session(
        &self,
        resp: &ureq::Response,
        offset: u64,
        what: &str,
    ) -> Result<Upload, RegistryError> {
        let location = resp.header("Location").ok_or_else(|| {
            self.transport(format!(
                "{what}: the registry answered {} without a Location",
                resp.status()
            ))
        })?;
        Ok(Upload {
            location: self.absolute(location),
            offset,
        })
    }

    /// A `Location` as a URL: absolute as given, or relative to the registry.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("https://") || location.starts_with("http://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/v2/{location}", self.base)
        }
    }

    /// Whether `url` is on the registry's own scheme, host and port.
    fn same_origin(&self, url: &str) -> bool {
        url.strip_prefix(&self.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
    }

    /// One request with the authorization `scope` needs (for the registry's own origin
    /// only); an error status is returned as [`RegistryError::Status`] naming `what`.
    fn send(
        &self,
        method: &str,
        url: &str,
        scope: &str,
        what: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<ureq::Response, RegistryError> {
        let mut req = self.agent.request(method, url);
        for (name, value) in headers {
            req = req.set(name, value);
        }
        if self.same_origin(url) {
            if let Some(header) = self.authorization_for(scope)? {
                req = req.set("Authorization", &header);
            }
        }
        let replay = match body {
            Body::Nothing => Some(Body::Nothing),
            Body::Bytes(bytes) => Some(Body::Bytes(bytes)),
            Body::Stream(..) => None,
        };
        let result = match body {
            Body::Nothing => req.call(),
            Body::Bytes(bytes) => req.send_bytes(bytes),
            Body::Stream(reader, len) => req
                .set("Content-Length", &len.to_string())
                .send(reader.take(len)),
        };
        match result {
            // Redirects are not followed on a push (the agent follows none): a registry's
            // upload answers are 2xx with a Location, never 3xx.
            Ok(resp) if (300..400).contains(&resp.status()) => Err(RegistryError::Status {
                what: what.to_string(),
                status: resp.status(),
                reason: format!(
                    "an unexpected redirect to {:?}",
                    resp.header("Location").unwrap_or_default()
                ),
            }),
            Ok(resp) => Ok(resp),
            // Open to anonymous reads, the registry asks for credentials only now: learn
            // its challenge once and ask again (a HEAD or small body can be sent again).
            Err(ureq::Error::Status(401, resp))
                if self.challenge.get().is_none() && self.same_origin(url) =>
            {
                let learned = resp
                    .header("WWW-Authenticate")
                    .and_then(super::auth::Challenge::parse);
                match (learned, replay) {
                    (Some(challenge), Some(body)) => {
                        let _ = self.challenge.set(challenge);
                        self.send(method, url, scope, what, headers, body)
                    }
                    _ => Err(RegistryError::Status {
                        what: what.to_string(),
                        status: 401,
                        reason: error_message(resp),
                    }),
                }
            }
            Err(ureq::Error::Status(status, resp)) => Err(RegistryError::Status {
                what: what.to_string(),
                status,
                reason: error_message(resp),
            }),
            Err(ureq::Error::Transport(t)) => Err(self.transport(format!("{what}: {t}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::new(
            "127.0.0.1:5000",
            "http://127.0.0.1:5000".into(),
            ureq::agent(),
            None,
            None,
        )
    }

    #[test]
    fn locations_resolve_against_the_registry_and_only_its_origin_gets_credentials() {
        let r = registry();
        let rel = r.absolute("/v2/a/blobs/uploads/x?_state=s");
        assert_eq!(rel, "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=s");
        assert!(r.same_origin(&rel));
        let other = r.absolute("http://storage.example/upload/x");
        assert_eq!(other, "http://storage.example/upload/x");
        assert!(!r.same_origin(&other));
        // A host that merely starts like the registry's is another origin.
        assert!(!r.same_origin("http://127.0.0.1:50001/v2/"));
        assert!(!r.same_origin("https://127.0.0.1:5000/v2/"));
    }
}
