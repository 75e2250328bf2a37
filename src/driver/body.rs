//! Reading an HTTP answer from a device rivet does not trust (a BMC, an
//! agent) up to a cap: a body that says it is larger, or grows larger while
//! it is read, is refused without being kept.

/// Why a body was not read.
pub enum BodyError {
    /// Over the cap, by its `Content-Length` or by what arrived.
    TooLarge,
    /// The connection broke off, or the answer stalled past its timeout.
    Broken(reqwest::Error),
}

/// The body of `response`, at most `max` bytes of it.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Broken)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
