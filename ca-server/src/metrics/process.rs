//! The process metrics Prometheus's client libraries export by convention
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), read from /proc at each scrape:
//! `prometheus-client` has none of its own.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::constant;

/// Clock ticks per second in /proc's times (USER_HZ, 100 on every Linux architecture).
const TICKS: f64 = 100.0;

/// Reads /proc/self at each scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = Process::read() else {
            return Ok(());
        };
        constant(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            &ConstGauge::new(p.rss_bytes),
        )?;
        constant(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            &ConstGauge::new(p.virtual_bytes),
        )?;
        constant(
            &mut encoder,
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            &ConstCounter::new(p.cpu_seconds),
        )?;
        constant(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            &ConstGauge::new(p.open_fds),
        )?;
        if let Some(max) = p.max_fds {
            constant(
                &mut encoder,
                "process_max_fds",
                "The open-file limit (soft)",
                &ConstGauge::new(max),
            )?;
        }
        if let Some(start) = p.start_time {
            constant(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                &ConstGauge::new(start),
            )?;
        }
        Ok(())
    }
}

/// One reading of /proc/self.
#[derive(Debug, Clone, PartialEq)]
struct Process {
    rss_bytes: i64,
    virtual_bytes: i64,
    cpu_seconds: f64,
    open_fds: i64,
    max_fds: Option<i64>,
    start_time: Option<f64>,
}

impl Process {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self::parse(&stat, &status, &limits, &boot, open_fds)
    }

    /// From the texts of /proc/self/stat, /proc/self/status, /proc/self/limits and
    /// /proc/stat, and the number of entries in /proc/self/fd.
    fn parse(stat: &str, status: &str, limits: &str, boot: &str, fds: usize) -> Option<Self> {
        // The command name (field 2) may hold spaces and parentheses: fields are counted
        // after its closing parenthesis, from field 3 (state).
        let after = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let ticks = field(14)? + field(15)?;
        let vsize = field(23)?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())?;
        let max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok());
        let btime = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let start_time = btime
            .zip(field(22))
            .map(|(boot, started)| boot as f64 + started as f64 / TICKS);
        Some(Process {
            rss_bytes: rss_kib * 1024,
            virtual_bytes: i64::try_from(vsize).unwrap_or(i64::MAX),
            cpu_seconds: ticks as f64 / TICKS,
            open_fds: i64::try_from(fds).unwrap_or(i64::MAX),
            max_fds,
            start_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_texts_including_a_command_name_with_spaces() {
        let stat = "4242 (ca server) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 104857600 2000 18446744073709551615";
        let status = "Name:\tca-server\nVmRSS:\t  8192 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            65536                65536                files\n";
        let boot = "cpu  1 2 3\nbtime 1800000000\n";
        let p = Process::parse(stat, status, limits, boot, 7).unwrap();
        assert_eq!(
            p,
            Process {
                rss_bytes: 8192 * 1024,
                virtual_bytes: 104_857_600,
                cpu_seconds: 3.0,
                open_fds: 7,
                max_fds: Some(65536),
                start_time: Some(1_800_000_123.45),
            }
        );
    }

    #[test]
    fn this_process_reads() {
        let p = Process::read().unwrap();
        assert!(p.rss_bytes > 0 && p.open_fds > 0, "{p:?}");
    }
}
