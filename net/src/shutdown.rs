//! Graceful shutdown: a cancellation token for "stop accepting", a task tracker for "drain".

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shutdown coordination shared by a server's tasks.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token that is cancelled when shutdown begins.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The tracker of tasks that must finish (or be abandoned after the grace period).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Begins shutdown: listeners stop accepting, tasks see [`Self::cancelled`].
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when shutdown begins.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Spawns a tracked task.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Waits for every tracked task to finish, at most `grace`. Returns `true` if all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Triggers shutdown on the first SIGTERM or SIGINT. Spawn it once from `main`.
    pub async fn on_signals(self) {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining");
        self.trigger();
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default disposition.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn drain_waits_for_in_flight_work() {
        let sd = Shutdown::new();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let s2 = sd.clone();
        sd.spawn(async move {
            s2.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            d2.store(true, Ordering::SeqCst);
        });
        sd.trigger();
        assert!(sd.drain(Duration::from_secs(5)).await);
        assert!(
            done.load(Ordering::SeqCst),
            "drain returned before the task finished"
        );
    }

    #[tokio::test]
    async fn drain_gives_up_after_grace() {
        let sd = Shutdown::new();
        sd.spawn(std::future::pending::<()>());
        sd.trigger();
        assert!(!sd.drain(Duration::from_millis(50)).await);
    }
}
