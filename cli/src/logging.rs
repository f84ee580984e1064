//! Logging for the server commands: `tracing` to stderr at the configured level, with openraft's
//! warnings and errors limited to one per call site every [`REPEAT_EVERY`]. openraft reports a
//! peer it cannot reach on every heartbeat (every 500 ms, from the same call site), which buries
//! everything else in the log while a node is down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use parking_lot::Mutex;
use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The shortest time between two openraft warnings or errors from one call site.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// Installs the process's logger: `level` is an env-filter directive (`info`, `quiver=debug`).
pub fn init(level: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("log.level `{level}` is not a valid filter"))?;
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter)
        .with_filter(Repeats::new(REPEAT_EVERY));
    tracing_subscriber::registry().with(output).try_init()?;
    Ok(())
}

/// Lets an openraft warning or error through at most once per call site every `every`.
pub struct Repeats {
    every: Duration,
    last: Mutex<HashMap<Identifier, Instant>>,
}

impl Repeats {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::default(),
        }
    }

    fn limited(metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && metadata.target().starts_with("openraft")
            && *metadata.level() <= Level::WARN
    }
}

impl<S> Filter<S> for Repeats {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !Self::limited(metadata) {
            return true;
        }
        let now = Instant::now();
        let mut last = self.last.lock();
        match last.get(&metadata.callsite()) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                last.insert(metadata.callsite(), now);
                true
            }
        }
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        match Self::limited(metadata) {
            // Decided event by event.
            true => Interest::sometimes(),
            false => Interest::always(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn openraft_repeats_are_limited_and_nothing_else_is() {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(Repeats::new(Duration::from_secs(3600)));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..50 {
                tracing::error!(target: "openraft::replication", "peer 3 unreachable");
                tracing::info!(target: "quiver", "ours");
            }
        });
        let text = String::from_utf8(captured.0.lock().clone()).unwrap();
        assert_eq!(text.matches("peer 3 unreachable").count(), 1, "{text}");
        assert_eq!(text.matches("ours").count(), 50);
    }
}
