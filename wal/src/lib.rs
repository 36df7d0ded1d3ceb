//! kelvin-wal: placeholder, filled in by the WAL work.
