//! A minimal HTTP/1.1 client for the tests of operations endpoints and
//! interactive queries: one GET per connection, nothing more.

use std::io::{Read, Write};

/// What a GET returned.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
    pub body: String,
}

/// GETs `path` from the server at `address` (`host:port`).
pub fn http_get(address: &str, path: &str) -> HttpAnswer {
    let mut stream = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("cannot reach {address}: {e}"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let location = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("location"))
        .map(|(_, value)| value.trim().to_string());
    HttpAnswer {
        status,
        location,
        body: body.to_string(),
    }
}

/// The values of the Prometheus samples whose line starts with `prefix`.
pub fn metric_values(metrics: &str, prefix: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect()
}
