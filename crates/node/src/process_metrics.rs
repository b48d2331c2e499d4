//! The standard Prometheus `process_*` metrics (what every Prometheus client library exports
//! and etcd serves): memory, CPU, file descriptors, start time, read from `/proc/self` at each
//! scrape. Dashboards and `etcdctl check datascale` (which reads
//! `process_resident_memory_bytes`) expect them. Off Linux, or if `/proc` cannot be read, the
//! metrics that cannot be read are left out, not reported as zero.

use std::fmt::Write;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`: fixed at 100 in Linux's ABI).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` tells about this process.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// The metrics in the text format, one family each (an empty string where nothing is known).
pub(crate) fn encode() -> String {
    render(&read())
}

fn read() -> Process {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let fields = stat.as_deref().and_then(stat_fields);
    Process {
        cpu_seconds: fields.map(|f| (f.utime + f.stime) as f64 / USER_HZ),
        start_time_seconds: fields
            .zip(boot)
            .map(|(f, b)| b + f.start_ticks as f64 / USER_HZ),
        resident_bytes: status.as_deref().and_then(|s| status_kib(s, "VmRSS:")),
        virtual_bytes: status.as_deref().and_then(|s| status_kib(s, "VmSize:")),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s)),
    }
}

fn render(p: &Process) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, sample: &str, v: Option<String>| {
        if let Some(v) = v {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {v}\n"
            );
        }
    };
    family(
        "process_cpu_seconds",
        "counter",
        "Total user and system CPU time spent in seconds.",
        "process_cpu_seconds_total",
        p.cpu_seconds.map(|v| v.to_string()),
    );
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds,
        ),
    ];
    for (name, help, v) in gauges {
        family(name, "gauge", help, name, v.map(|v| v.to_string()));
    }
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        "process_start_time_seconds",
        p.start_time_seconds.map(|v| v.to_string()),
    );
    out
}

/// The fields of `/proc/self/stat` used here (see proc(5)).
#[derive(Clone, Copy, Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Fields 14, 15 and 22 of a stat line. The command name (field 2) may hold spaces and
/// parentheses, so counting starts after its last `)`.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// A `Name:   N kB` line of `/proc/self/status`, in bytes.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(name))?;
    let kib = line.split_whitespace().next()?.parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` when unlimited).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_parses() {
        let line = "4242 (syn od) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 \
                    12 0 123456 1000000 2000 18446744073709551615";
        let f = stat_fields(line).expect("parses");
        assert_eq!(
            f,
            StatFields {
                utime: 250,
                stime: 50,
                start_ticks: 123456
            }
        );
        assert_eq!(stat_fields("no name here"), None);
        assert_eq!(stat_fields("1 (x) S 1"), None, "too short");
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status = "Name:\tsynod\nVmSize:\t  123 kB\nVmRSS:\t   64 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(64 * 1024));
        assert_eq!(status_kib(status, "VmSize:"), Some(123 * 1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files("Max open files unlimited unlimited files"),
            None
        );
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[test]
    fn this_process_reports_memory_cpu_and_fds_on_linux() {
        let text = encode();
        if cfg!(target_os = "linux") {
            let p = read();
            assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
            assert!(p.open_fds.is_some_and(|n| n > 0), "{p:?}");
            assert!(p.start_time_seconds.is_some_and(|t| t > 1.0e9), "{p:?}");
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(text.lines().any(|l| l.starts_with(name)), "{name}: {text}");
            }
        }
        // Absent values give no sample at all, not a zero.
        assert_eq!(render(&Process::default()), "");
    }
}
