//! A panic in a driver call is a bug, never a success: it becomes the
//! node's failure ("internal error: …"), recorded like any other, and is
//! logged at error level.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a failure caused by a panic starts with; `/healthz` and `/metrics`
/// look for it.
pub const INTERNAL_ERROR: &str = "internal error";

/// `future`'s output, or the panic's message when polling it panicked.
pub async fn caught<F: Future>(future: F) -> Result<F::Output, String> {
    CatchUnwind {
        future: Box::pin(future),
    }
    .await
}

struct CatchUnwind<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.future.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic_message(panic.as_ref()))),
        }
    }
}

/// The text a panic carries, if it carries text.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    // A panic's text can quote what a BMC said at length: keep the start.
    format!(
        "{INTERNAL_ERROR}: {}",
        crate::driver::scrub::cut(&text, crate::driver::scrub::MESSAGE_BYTES)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_future_is_an_internal_error() {
        let done = caught(async { 7 }).await;
        assert_eq!(done, Ok(7));
        let failed = caught(async {
            tokio::task::yield_now().await;
            let text = "é".repeat(200);
            let _ = &text[..301];
        })
        .await;
        let message = failed.unwrap_err();
        assert!(
            message.starts_with("internal error: ") && message.contains("char boundary"),
            "{message}"
        );
        assert!(message.len() < 400, "a panic's text is cut: {message}");
    }
}
