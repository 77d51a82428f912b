//! A ready lookup for JSON-over-HTTP services, on reqwest.

use super::{Lookup, LookupError, LookupFuture};
use crate::error::WeirError;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use std::fmt::Display;
use std::marker::PhantomData;
use std::time::Duration;

/// `GET`s a URL made from a template and the query, and reads the JSON
/// answer into `R`.
///
/// The query replaces `{}` in the template, percent-encoded. Connection
/// errors, timeouts, `408`, `429` and `5xx` answers are retryable; other
/// answers that are not `2xx` (a `404` for an unknown id) and bodies that
/// are not the expected JSON are permanent failures. Connections are kept
/// alive and shared by all calls.
///
/// ```
/// use std::time::Duration;
/// use weir::enrich::HttpJsonLookup;
///
/// #[derive(serde::Deserialize)]
/// struct Mapping { new_user_id: String }
///
/// let lookup = HttpJsonLookup::<i64, Mapping>::new("http://id-mapping:8080/users/{}")?
///     .header("authorization", "Bearer secret")?
///     .timeout(Duration::from_secs(2))?;
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct HttpJsonLookup<Q, R> {
    client: reqwest::Client,
    template: String,
    headers: HeaderMap,
    timeout: Option<Duration>,
    _types: PhantomData<fn(Q) -> R>,
}

impl<Q, R> HttpJsonLookup<Q, R> {
    /// A lookup of `template`, which must contain `{}` once.
    pub fn new(template: impl Into<String>) -> Result<Self, WeirError> {
        let template = template.into();
        if template.matches("{}").count() != 1 {
            return Err(WeirError::Config(format!(
                "the URL template {template:?} must contain {{}} exactly once, where the query goes"
            )));
        }
        let lookup = HttpJsonLookup {
            client: reqwest::Client::new(),
            template,
            headers: HeaderMap::new(),
            timeout: None,
            _types: PhantomData,
        };
        lookup.rebuild()
    }

    /// Sends `name: value` with every request.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, WeirError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| WeirError::Config(format!("invalid header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| WeirError::Config(format!("invalid value of header {name}: {e}")))?;
        self.headers.insert(name, value);
        self.rebuild()
    }

    /// The longest a request may take (the enrichment's own timeout applies too).
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, WeirError> {
        self.timeout = Some(timeout);
        self.rebuild()
    }

    fn rebuild(mut self) -> Result<Self, WeirError> {
        let mut builder = reqwest::Client::builder()
            .default_headers(self.headers.clone())
            .pool_max_idle_per_host(256);
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        self.client = builder
            .build()
            .map_err(|e| WeirError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(self)
    }

    fn url(&self, query: &impl Display) -> String {
        let encoded: String = query
            .to_string()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.template.replacen("{}", &encoded, 1)
    }
}

impl<Q, R> Lookup<Q, R> for HttpJsonLookup<Q, R>
where
    Q: Display + Send + 'static,
    R: serde::de::DeserializeOwned + Send + 'static,
{
    fn lookup(&self, query: Q) -> LookupFuture<R> {
        let url = self.url(&query);
        let request = self.client.get(&url);
        Box::pin(async move {
            let response = request
                .send()
                .await
                .map_err(|e| LookupError::retryable(format!("GET {url}: {e}")))?;
            let status = response.status();
            if !status.is_success() {
                let message = format!("GET {url}: {status}");
                let retryable = status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                return Err(if retryable {
                    LookupError::retryable(message)
                } else {
                    LookupError::permanent(message)
                });
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| LookupError::retryable(format!("GET {url}: reading the body: {e}")))?;
            serde_json::from_slice(&body)
                .map_err(|e| LookupError::permanent(format!("GET {url}: the answer is not the expected JSON: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_percent_encoded_into_the_template() {
        let lookup = HttpJsonLookup::<String, ()>::new("http://h/users/{}?v=1").unwrap();
        assert_eq!(lookup.url(&"a b/ü".to_string()), "http://h/users/a%20b%2F%C3%BC?v=1");
        assert!(HttpJsonLookup::<String, ()>::new("http://h/users").is_err());
        assert!(HttpJsonLookup::<String, ()>::new("http://h/{}/{}").is_err());
    }
}
