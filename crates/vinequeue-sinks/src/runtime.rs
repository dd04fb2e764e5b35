//! The runtime of a blocking sink built on an async client: one worker thread of its
//! own, so that the blocking form works from the batcher thread with no runtime around.

/// A tokio runtime of one worker, its thread named `vinequeue-{name}`; the error names
/// the `backend`.
pub(crate) fn blocking(name: &str, backend: &str) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("vinequeue-{name}"))
        .enable_all()
        .build()
        .map_err(|e| format!("{backend} sink: the runtime did not start: {e}"))
}
