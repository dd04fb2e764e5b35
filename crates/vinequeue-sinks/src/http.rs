//! [`HttpSink`]: each batch POSTed to an HTTP endpoint (blocking client, rustls).
//!
//! ```no_run
//! use std::time::Duration;
//! use vinequeue_core::{Config, Queue};
//! use vinequeue_sinks::http::{BodyFormat, HttpSink};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Event { id: u64, kind: String }
//!
//! let sink = HttpSink::builder("https://ingest.example.com/events")
//!     .format(BodyFormat::Ndjson)
//!     .header("Authorization", "Bearer secret")
//!     .build()?;
//! let queue = Queue::new(Config::default().wal_path("/var/lib/app/events"), sink)?;
//! queue.start()?;
//! queue.enqueue(Event { id: 1, kind: "signup".into() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the answers mean
//!
//! | the endpoint answers | the sink returns |
//! |---|---|
//! | 2xx | `Ok`: the batch is delivered |
//! | 408, 425, 429, any 5xx | `SendError::retry`, or `retry_after` when the answer carries `Retry-After` (seconds) |
//! | another 4xx | `SendError::permanent` (the batch is dead-lettered), unless the [`partial`](HttpSinkBuilder::partial) hook names the failed items: `SendError::partial` |
//! | no answer (connection refused or reset, timeout, TLS) | `SendError::retry` |
//! | an item that does not serialize to JSON | `SendError::permanent` |
//!
//! Each request carries `Idempotency-Key: <queue id>:<first key>-<last key>` (the keys of
//! the batch's first and last items, [`Batch::key`]), the same on every retry of the
//! batch, and, with [`item_keys`](HttpSinkBuilder::item_keys), each item's key in the
//! body, so that the endpoint can drop what it already took.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use vinequeue_core::{Batch, SendError, Sink};

/// How a batch is written in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BodyFormat {
    /// One JSON array of the items (`Content-Type: application/json`).
    #[default]
    JsonArray,
    /// One JSON document per line (`Content-Type: application/x-ndjson`).
    Ndjson,
}

/// Reads the failed items out of a 4xx answer: given the status, the body and the
/// batch's length, the positions in the batch that failed (`None`: the whole batch).
pub type PartialHook = Box<dyn Fn(u16, &str, usize) -> Option<Vec<usize>> + Send + Sync>;

/// Builds an [`HttpSink`].
#[must_use = "a builder does nothing until build()"]
pub struct HttpSinkBuilder {
    url: String,
    format: BodyFormat,
    headers: Vec<(String, String)>,
    timeout: Duration,
    item_keys: bool,
    partial: Option<PartialHook>,
}

impl std::fmt::Debug for HttpSinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSinkBuilder")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpSinkBuilder {
    /// The body's format. Default: [`BodyFormat::JsonArray`].
    pub fn format(mut self, format: BodyFormat) -> Self {
        self.format = format;
        self
    }

    /// A header sent with every request (authorization, tenant...).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Longest a request may take, connection included. Default: 30 s (and never past
    /// the batch's own deadline, `send_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Wraps each item as `{"queue_id": ..., "key": ..., "item": ...}`, so that the
    /// endpoint can deduplicate item by item. Default: the items as they are.
    pub fn item_keys(mut self, on: bool) -> Self {
        self.item_keys = on;
        self
    }

    /// How to read the failed items out of a 4xx answer (`SendError::partial`), for an
    /// endpoint that reports them (a body listing the rejected positions, say).
    pub fn partial(
        mut self,
        hook: impl Fn(u16, &str, usize) -> Option<Vec<usize>> + Send + Sync + 'static,
    ) -> Self {
        self.partial = Some(Box::new(hook));
        self
    }

    /// The sink.
    ///
    /// # Errors
    ///
    /// A message when the URL is not an http or https URL.
    pub fn build<T>(self) -> Result<HttpSink<T>, String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("{}: not an http:// or https:// URL", self.url));
        }
        Ok(HttpSink {
            agent: ureq::AgentBuilder::new().build(),
            config: self,
            _items: PhantomData,
        })
    }
}

/// A [`Sink`] that POSTs each batch to an HTTP endpoint; see the [module](self)
/// documentation for what the answers mean.
pub struct HttpSink<T> {
    agent: ureq::Agent,
    config: HttpSinkBuilder,
    _items: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for HttpSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpSink<()> {
    /// A builder for a sink posting to `url`.
    pub fn builder(url: impl Into<String>) -> HttpSinkBuilder {
        HttpSinkBuilder {
            url: url.into(),
            format: BodyFormat::default(),
            headers: Vec::new(),
            timeout: Duration::from_secs(30),
            item_keys: false,
            partial: None,
        }
    }
}

#[derive(Serialize)]
struct Keyed<'a, T> {
    queue_id: String,
    key: u64,
    item: &'a T,
}

impl HttpSinkBuilder {
    /// The request body of `batch`.
    fn body<T: Serialize>(&self, batch: &Batch<T>) -> Result<Vec<u8>, serde_json::Error> {
        let id = batch.queue_id().to_string();
        let value = |i: usize, item: &T| -> Result<serde_json::Value, serde_json::Error> {
            if self.item_keys {
                serde_json::to_value(Keyed {
                    queue_id: id.clone(),
                    key: batch.key(i).1,
                    item,
                })
            } else {
                serde_json::to_value(item)
            }
        };
        match self.format {
            BodyFormat::JsonArray => {
                let items = batch
                    .iter()
                    .enumerate()
                    .map(|(i, item)| value(i, item))
                    .collect::<Result<Vec<_>, _>>()?;
                serde_json::to_vec(&items)
            }
            BodyFormat::Ndjson => {
                let mut out = Vec::new();
                for (i, item) in batch.iter().enumerate() {
                    serde_json::to_writer(&mut out, &value(i, item)?)?;
                    out.push(b'\n');
                }
                Ok(out)
            }
        }
    }

    /// `Idempotency-Key`: the queue and the keys of the batch's first and last items.
    fn idempotency_key<T>(batch: &Batch<T>) -> String {
        let (id, first) = batch.key(0);
        let (_, last) = batch.key(batch.len() - 1);
        format!("{id}:{first}-{last}")
    }
}

/// The wait a `Retry-After` header asks for (seconds; an HTTP date is not read).
fn retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl HttpSinkBuilder {
    /// What an answer other than 2xx makes of the batch (the table in the module docs).
    fn answer<T>(
        &self,
        code: u16,
        wait: Option<Duration>,
        text: impl FnOnce() -> String,
        batch: &Batch<T>,
    ) -> Result<(), SendError> {
        let why = format!("{} answered {code}", self.url);
        if code == 408 || code == 425 || code == 429 || code >= 500 {
            return Err(match wait {
                Some(wait) => SendError::retry_after(wait, why),
                None => SendError::retry(why),
            });
        }
        let text = text();
        if let Some(hook) = &self.partial {
            if let Some(failed) = hook(code, &text, batch.len()) {
                return Err(SendError::partial(failed, format!("{why}: {text}")));
            }
        }
        Err(SendError::permanent(format!("{why}: {text}")))
    }

    /// The request's timeout: the builder's, never past the batch's deadline.
    fn timeout_for<T>(&self, batch: &Batch<T>) -> Duration {
        self.timeout
            .min(
                batch
                    .deadline()
                    .saturating_duration_since(std::time::Instant::now()),
            )
            .max(Duration::from_millis(1))
    }

    fn content_type(&self) -> &'static str {
        match self.format {
            BodyFormat::JsonArray => "application/json",
            BodyFormat::Ndjson => "application/x-ndjson",
        }
    }
}

impl<T: Serialize + Send + 'static> Sink<T> for HttpSink<T> {
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let body = self.config.body(batch).map_err(|e| {
            SendError::permanent(format!("an item does not serialize to JSON: {e}"))
        })?;
        let timeout = self.config.timeout_for(batch);
        let content_type = self.config.content_type();
        let mut request = self
            .agent
            .post(&self.config.url)
            .timeout(timeout)
            .set("Content-Type", content_type)
            .set("Idempotency-Key", &HttpSinkBuilder::idempotency_key(batch));
        for (name, value) in &self.config.headers {
            request = request.set(name, value);
        }
        match request.send_bytes(&body) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, response)) => {
                let wait = retry_after(response.header("Retry-After"));
                self.config.answer(
                    code,
                    wait,
                    || response.into_string().unwrap_or_default(),
                    batch,
                )
            }
            Err(ureq::Error::Transport(t)) => {
                Err(SendError::retry(format!("{}: {t}", self.config.url)))
            }
        }
    }
}

/// The async form of [`HttpSink`] (reqwest, with rustls), an
/// [`AsyncSink`](vinequeue_async::AsyncSink) for `AsyncQueue` on a tokio runtime: the same
/// requests, the same answers (the table in the [module](self) documentation). Built
/// with [`HttpSinkBuilder::build_async`] (feature `http-async`).
#[cfg(feature = "http-async")]
pub struct AsyncHttpSink<T> {
    client: reqwest::Client,
    config: HttpSinkBuilder,
    _items: PhantomData<fn(&T)>,
}

#[cfg(feature = "http-async")]
impl<T> std::fmt::Debug for AsyncHttpSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncHttpSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "http-async")]
impl HttpSinkBuilder {
    /// The async sink (feature `http-async`).
    ///
    /// # Errors
    ///
    /// A message when the URL is not an http or https URL, or the client cannot be made
    /// (no TLS roots).
    pub fn build_async<T>(self) -> Result<AsyncHttpSink<T>, String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("{}: not an http:// or https:// URL", self.url));
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("HTTP sink: the client cannot be made: {e}"))?;
        Ok(AsyncHttpSink {
            client,
            config: self,
            _items: PhantomData,
        })
    }
}

#[cfg(feature = "http-async")]
impl<T: Serialize + Send + Sync + 'static> AsyncHttpSink<T> {
    async fn post(&self, batch: &Batch<T>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let body = self.config.body(batch).map_err(|e| {
            SendError::permanent(format!("an item does not serialize to JSON: {e}"))
        })?;
        let mut request = self
            .client
            .post(&self.config.url)
            .timeout(self.config.timeout_for(batch))
            .header("Content-Type", self.config.content_type())
            .header("Idempotency-Key", HttpSinkBuilder::idempotency_key(batch));
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let code = response.status().as_u16();
                let wait = retry_after(
                    response
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok()),
                );
                let text = response.text().await.unwrap_or_default();
                self.config.answer(code, wait, || text, batch)
            }
            Err(e) => Err(SendError::retry(format!("{}: {e}", self.config.url))),
        }
    }
}

#[cfg(feature = "http-async")]
impl<T: Serialize + Send + Sync + 'static> vinequeue_async::AsyncSink<T> for AsyncHttpSink<T> {
    fn send(
        &mut self,
        batch: &Batch<T>,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        self.post(batch)
    }
}
