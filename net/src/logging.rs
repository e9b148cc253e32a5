//! The logless logging policy.
//!
//! - The default level is `warn`; `debug` and `trace` are compiled out of release builds
//!   (`tracing/release_max_level_info`).
//! - There are no access logs anywhere in the suite.
//! - Output is plain text on standard output, without targets, with only the event message and
//!   the fields named in [`ALLOWED_FIELDS`]. Any other field, in events or spans, is dropped at the
//!   sink, so a field that happens to hold an address never reaches the output.
//! - Messages must be static strings; variable data goes into allow-listed fields. The privacy
//!   canary test in `tests/` is the end-to-end check.

use std::fmt;
use std::str::FromStr;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Field names that may reach the output. Everything else is dropped.
pub const ALLOWED_FIELDS: &[&str] = &[
    "message",
    "error.kind",
    "error",
    "count",
    "duration_ms",
    "listener",
    "status",
    "shard",
    "limit",
];

/// A log level, as given by `--log-level` or `WAYPOST_LOG`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing at all.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings (default).
    #[default]
    Warn,
    /// Informational start-up and shutdown messages.
    Info,
    /// Debug builds only.
    Debug,
    /// Debug builds only.
    Trace,
}

impl Level {
    fn directive(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as clap::ValueEnum>::from_str(s, true)
    }
}

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init(level: Level) {
    let filter = EnvFilter::new(format!(
        "{},hyper=warn,h2=warn,rustls=warn,reqwest=warn,tower_http=warn",
        level.directive()
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .fmt_fields(AllowListFields)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Formats only allow-listed fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowListFields;

impl<'writer> FormatFields<'writer> for AllowListFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = AllowListVisitor {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct AllowListVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Visit for AllowListVisitor<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || !ALLOWED_FIELDS.contains(&field.name()) {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value:?}")
        } else {
            write!(self.writer, "{sep}{}={value:?}", field.name())
        };
    }
}

/// Formats fields with the allow-list into a string; used by tests of the policy.
pub fn format_for_test(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_target(false)
        .with_ansi(false)
        .fmt_fields(AllowListFields)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().map(|v| v.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_fields_reach_the_output() {
        let out = format_for_test(|| {
            tracing::warn!(peer = "192.0.2.1:5000", count = 3, "relay refused");
            let span = tracing::info_span!("conn", user = "canary-user");
            let _g = span.enter();
            tracing::error!(token = "tok-secret", status = 500, "push failed");
        });
        assert!(out.contains("relay refused"), "{out}");
        assert!(out.contains("count=3"), "{out}");
        assert!(out.contains("status=500"), "{out}");
        for secret in ["192.0.2.1", "5000", "canary-user", "tok-secret"] {
            assert!(!out.contains(secret), "leaked {secret}: {out}");
        }
    }

    #[test]
    fn level_parses() {
        assert_eq!("WARN".parse::<Level>().unwrap(), Level::Warn);
        assert!("loud".parse::<Level>().is_err());
    }
}
