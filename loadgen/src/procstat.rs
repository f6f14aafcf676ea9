//! CPU time from /proc: a server process's user+system time with its threads, its live
//! descendants (e.g. nginx workers) and its reaped children, this process's own use, and the
//! whole machine's time per core from /proc/stat (user, system, softirq ... split by core).

use std::fs;
use std::io;

use thiserror::Error;

/// Why a process's CPU time could not be read.
#[derive(Debug, Error)]
pub enum ProcError {
    /// /proc/PID/stat could not be read (no such process?).
    #[error("cannot read /proc/{pid}/stat: {source}")]
    Read {
        /// The process id.
        pid: u32,
        /// The I/O error.
        source: io::Error,
    },
    /// /proc/PID/stat did not have the expected fields.
    #[error("unexpected format of /proc/{0}/stat")]
    Format(u32),
    /// /proc/stat could not be read or parsed.
    #[error("cannot read the machine's CPU times from /proc/stat: {0}")]
    Machine(String),
}

/// One `cpu` line of /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// User mode.
    pub user: u64,
    /// User mode at low priority.
    pub nice: u64,
    /// Kernel mode (system calls, and on loopback most of TCP).
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle waiting for I/O.
    pub iowait: u64,
    /// Hard interrupts.
    pub irq: u64,
    /// Soft interrupts (network receive and transmit completion).
    pub softirq: u64,
    /// Taken by the hypervisor.
    pub steal: u64,
}

impl CpuTicks {
    /// Ticks not idle (guest time is already inside user and nice).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    /// Field-wise `self - before` (saturating: counters never go back, but hot-plug might).
    pub fn since(&self, before: &CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(before.user),
            nice: self.nice.saturating_sub(before.nice),
            system: self.system.saturating_sub(before.system),
            idle: self.idle.saturating_sub(before.idle),
            iowait: self.iowait.saturating_sub(before.iowait),
            irq: self.irq.saturating_sub(before.irq),
            softirq: self.softirq.saturating_sub(before.softirq),
            steal: self.steal.saturating_sub(before.steal),
        }
    }
}

/// Every core's CPU times: (core number, ticks).
pub type MachineSample = Vec<(u32, CpuTicks)>;

/// Every core's line of /proc/stat (`cpu0`, `cpu1`, ...; the summed `cpu` line is left out, the
/// sum of the cores is the same figure), as (core number, ticks).
pub fn parse_machine(text: &str) -> Option<Vec<(u32, CpuTicks)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue; // the summed "cpu " line, or not a cpu line
        };
        let mut f = rest.split_whitespace();
        let Some(Ok(core)) = f.next().map(str::parse::<u32>) else {
            continue;
        };
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 4 {
            return None;
        }
        let g = |i: usize| v.get(i).copied().unwrap_or(0);
        out.push((
            core,
            CpuTicks {
                user: g(0),
                nice: g(1),
                system: g(2),
                idle: g(3),
                iowait: g(4),
                irq: g(5),
                softirq: g(6),
                steal: g(7),
            },
        ));
    }
    (!out.is_empty()).then_some(out)
}

/// Read every core's CPU times from /proc/stat.
pub fn read_machine() -> Result<Vec<(u32, CpuTicks)>, ProcError> {
    let text = fs::read_to_string("/proc/stat").map_err(|e| ProcError::Machine(e.to_string()))?;
    parse_machine(&text).ok_or_else(|| ProcError::Machine("unexpected format".into()))
}

/// The machine's TCP counters from /proc/net/snmp (every socket of this network namespace,
/// loopback included): what a proxy run costs in connections and segments, whoever sent them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSnmp {
    /// Connections this machine opened (connect()).
    pub active_opens: u64,
    /// Connections this machine accepted.
    pub passive_opens: u64,
    /// Segments sent (retransmissions excluded).
    pub out_segs: u64,
    /// Segments retransmitted.
    pub retrans_segs: u64,
    /// Connections reset from ESTABLISHED or CLOSE-WAIT.
    pub estab_resets: u64,
}

/// The `Tcp:` header and value lines of /proc/net/snmp, by field name.
pub fn parse_tcp_snmp(text: &str) -> Option<TcpSnmp> {
    let mut lines = text.lines().filter(|l| l.starts_with("Tcp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some(TcpSnmp {
        active_opens: get("ActiveOpens")?,
        passive_opens: get("PassiveOpens")?,
        out_segs: get("OutSegs")?,
        retrans_segs: get("RetransSegs").unwrap_or(0),
        estab_resets: get("EstabResets").unwrap_or(0),
    })
}

/// Read the machine's TCP counters (None without /proc/net/snmp).
pub fn read_tcp_snmp() -> Option<TcpSnmp> {
    parse_tcp_snmp(&fs::read_to_string("/proc/net/snmp").ok()?)
}

/// The fields of /proc/PID/stat that matter here, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id.
    pub ppid: u32,
    /// User time of all threads.
    pub utime: u64,
    /// System time of all threads.
    pub stime: u64,
    /// User time of waited-for children.
    pub cutime: u64,
    /// System time of waited-for children.
    pub cstime: u64,
}

/// Parse the text of /proc/PID/stat. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state).
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: num(4)? as u32,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
    })
}

/// Read /proc/PID/stat.
pub fn read_stat(pid: u32) -> Result<Stat, ProcError> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| ProcError::Read { pid, source })?;
    parse_stat(&text).ok_or(ProcError::Format(pid))
}

/// Nanoseconds per clock tick.
pub fn tick_ns() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// Total CPU time (ns) of `pid`: all its threads, all its live descendants, and the children
/// it has already reaped.
pub fn tree_cpu_ns(pid: u32) -> Result<u64, ProcError> {
    let root = read_stat(pid)?;
    let mut ticks = root.utime + root.stime + root.cutime + root.cstime;
    // Walk every process once, then add each descendant of `pid` (their own time only: their
    // reaped children are in their cutime, and they are our descendants too only while alive).
    let mut procs: Vec<(u32, Stat)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if p == pid {
                continue;
            }
            if let Ok(st) = read_stat(p) {
                procs.push((p, st));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (p, st) in &procs {
            if st.ppid == parent {
                tree.push(*p);
                ticks += st.utime + st.stime + st.cutime + st.cstime;
            }
        }
        i += 1;
    }
    Ok(ticks * tick_ns())
}

/// This process's (user, system) CPU time in ns.
pub fn self_cpu_ns() -> (u64, u64) {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let text = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 3 4 20 0 5 0 100 1000000 200 18446744073709551615";
        let st = parse_stat(text).unwrap();
        assert_eq!(
            st,
            Stat {
                ppid: 1,
                utime: 250,
                stime: 75,
                cutime: 3,
                cstime: 4
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_proc_stat_per_core() {
        let text = "cpu  10 1 20 300 4 5 6 7 0 0\ncpu0 4 0 10 150 2 1 3 4 0 0\n\
                    cpu1 6 1 10 150 2 4 3 3 0 0\nintr 1 2 3\nctxt 5\n";
        let m = parse_machine(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].0, 1);
        assert_eq!(m[1].1.softirq, 3);
        assert_eq!(m[0].1.busy(), 4 + 10 + 1 + 3 + 4);
        let later = CpuTicks { user: 9, ..m[0].1 };
        assert_eq!(later.since(&m[0].1).user, 5);
        assert_eq!(later.since(&m[0].1).idle, 0);
        assert_eq!(parse_machine("intr 1\n"), None);
        // The real file parses and has at least one core.
        assert!(!read_machine().unwrap().is_empty());
    }

    #[test]
    fn tcp_snmp_by_field_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\nTcp: 1 200 120000 -1 10 20 0 3 5 100 200 7 0 1 0\nUdp: InDatagrams\nUdp: 5\n";
        let t = parse_tcp_snmp(text).unwrap();
        assert_eq!(
            t,
            TcpSnmp {
                active_opens: 10,
                passive_opens: 20,
                out_segs: 200,
                retrans_segs: 7,
                estab_resets: 3
            }
        );
        assert_eq!(parse_tcp_snmp("Tcp: ActiveOpens\n"), None);
        assert!(read_tcp_snmp().is_some());
    }

    #[test]
    fn reads_own_process_and_counts_children() {
        let me = std::process::id();
        let before = tree_cpu_ns(me).unwrap();
        // Burn a little CPU in a child thread; the process stat includes threads.
        std::thread::spawn(|| {
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while t.elapsed().as_millis() < 60 {
                x = x.wrapping_mul(31).wrapping_add(1);
            }
            std::hint::black_box(x);
        })
        .join()
        .unwrap();
        let after = tree_cpu_ns(me).unwrap();
        assert!(after > before, "{before} -> {after}");
        assert!(read_stat(u32::MAX).is_err());
    }
}
