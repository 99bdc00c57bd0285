//! The embedded store's files, read at each scrape: the WAL's size and what was written
//! to it, its resets, the commits, and the free space of its file system.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::constant;
use crate::store::Store;

/// Reads [`Store::stats`] at each scrape (nothing for a store without files of its own).
#[derive(Debug)]
pub struct StoreCollector(pub Arc<dyn Store>);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.0.stats() else {
            return Ok(());
        };
        constant(
            &mut encoder,
            "dtca_store_wal_bytes",
            "Size of the embedded store's WAL file",
            &ConstGauge::new(stats.wal_bytes),
        )?;
        constant(
            &mut encoder,
            "dtca_store_wal_written_bytes",
            "Bytes appended to the embedded store's WAL since the server started",
            &ConstCounter::new(stats.wal_written_bytes),
        )?;
        constant(
            &mut encoder,
            "dtca_store_wal_resets",
            "Times the embedded store's WAL started over from its beginning",
            &ConstCounter::new(stats.wal_resets),
        )?;
        constant(
            &mut encoder,
            "dtca_store_commits",
            "Transactions the embedded store committed (each a batch of writes)",
            &ConstCounter::new(stats.commits),
        )?;
        if let Some(free) = stats.free_bytes {
            constant(
                &mut encoder,
                "dtca_store_free_bytes",
                "Free space on the embedded store's file system",
                &ConstGauge::new(free),
            )?;
        }
        Ok(())
    }
}
