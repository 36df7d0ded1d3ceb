//! raft-rs logs through `slog`; Kelvin logs through `tracing`. This drain forwards each
//! slog record, with its key-value pairs, to a tracing event under the target `raft`.

use std::fmt::Write as _;

/// A slog logger whose records become tracing events tagged with the group.
pub fn logger(group: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("group" => group))
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::Level::ERROR,
            slog::Level::Warning => tracing::Level::WARN,
            slog::Level::Info => tracing::Level::INFO,
            slog::Level::Debug | slog::Level::Trace => tracing::Level::DEBUG,
        };
        // Cheap exit: most raft-rs records are debug and debug is usually off.
        let enabled = match level {
            tracing::Level::ERROR => tracing::enabled!(target: "raft", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(target: "raft", tracing::Level::WARN),
            tracing::Level::INFO => tracing::enabled!(target: "raft", tracing::Level::INFO),
            _ => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        };
        if !enabled {
            return Ok(());
        }
        let mut text = record.msg().to_string();
        let mut kv = KvText(&mut text);
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        match level {
            tracing::Level::ERROR => tracing::error!(target: "raft", "{text}"),
            tracing::Level::WARN => tracing::warn!(target: "raft", "{text}"),
            tracing::Level::INFO => tracing::info!(target: "raft", "{text}"),
            _ => tracing::debug!(target: "raft", "{text}"),
        }
        Ok(())
    }
}

struct KvText<'a>(&'a mut String);

impl slog::Serializer for KvText<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
