//! Fetching lists, CRLs and VRLs from `https://` or `file://` URLs, size-capped.

use std::time::Duration;

/// Fetches documents for a refresh.
pub(crate) struct Fetcher {
    client: Result<reqwest::Client, String>,
}

impl Fetcher {
    pub(crate) fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"));
        Self { client }
    }

    /// The bytes at `url`, at most `max` of them.
    pub(crate) async fn fetch(&self, url: &str, max: usize) -> Result<Vec<u8>, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed.to_file_path().map_err(|_| "bad file URL".to_owned())?;
                let meta = tokio::fs::metadata(&path).await.map_err(|e| format!("read: {e}"))?;
                if meta.len() > max as u64 {
                    return Err("document too large".into());
                }
                let bytes = tokio::fs::read(&path).await.map_err(|e| format!("read: {e}"))?;
                if bytes.len() > max {
                    return Err("document too large".into());
                }
                Ok(bytes)
            }
            "https" => {
                let client = self.client.as_ref().map_err(Clone::clone)?;
                let mut resp = client.get(parsed).send().await.map_err(|e| format!("fetch: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP status {}", resp.status().as_u16()));
                }
                if resp.content_length().is_some_and(|n| n > max as u64) {
                    return Err("document too large".into());
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(|e| format!("fetch: {e}"))? {
                    if body.len() + chunk.len() > max {
                        return Err("document too large".into());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
            _ => Err("only https:// and file:// URLs are fetched".into()),
        }
    }
}
