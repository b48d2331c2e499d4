//! The `synod server` processes of a chaos run: start, SIGKILL + restart, SIGSTOP / SIGCONT,
//! and a shutdown that leaves nothing behind.
//!
//! Every child runs in its own process group (so a Ctrl-C at the terminal reaches only
//! `synod chaos`, which then stops the children in order) and with `PR_SET_PDEATHSIG = SIGKILL`
//! (so even if `synod chaos` itself is SIGKILLed, the kernel kills the servers). [`Cluster`]'s
//! `Drop` kills every child — SIGCONT first if paused, then SIGKILL, then reaps — so a panic or an
//! early return cannot leave a server running.
//!
//! A member is a *slot*: its ports, data directory and log file stay put while membership
//! changes (`--faults reconfig`) give the slot a new member — a new id, an empty data directory,
//! started with `--join` — or retire it. Spare slots start retired and are used to grow.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use synod_core::NodeId;

/// One member's process and where it keeps its things.
pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub http_addr: String,
    /// Where the server really listens for peers (the proxy forwards here).
    pub peer_listen_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Starts so far (1 after the first start); written into the log before each start.
    pub starts: u32,
    /// Not a member of the cluster (a spare, or removed and not replaced): never started,
    /// never restarted by a heal.
    pub retired: bool,
    /// Set once the slot holds a member added at run time: how that member joins.
    pub join: Option<JoinArgs>,
}

/// `synod server --join` flags of a member added at run time (its addresses are the slot's).
#[derive(Clone, Debug)]
pub struct JoinArgs {
    /// HTTP endpoints of members to ask for the configuration.
    pub endpoints: Vec<String>,
    /// The advertised peer address (the proxy's listener for this slot).
    pub peer_addr: String,
    pub grpc_addr: String,
}

impl Member {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct Cluster {
    exe: PathBuf,
    config_path: PathBuf,
    plant_bug: Option<String>,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Describes the members; nothing is started yet.
    pub fn new(
        exe: &Path,
        config_path: &Path,
        plant_bug: Option<String>,
        members: Vec<(NodeId, String, String, String)>,
        out_dir: &Path,
    ) -> Cluster {
        let members = members
            .into_iter()
            .map(|(id, name, http_addr, peer_listen_addr)| Member {
                data_dir: out_dir.join("data").join(&name),
                log_path: out_dir.join(format!("{name}.log")),
                id,
                name,
                http_addr,
                peer_listen_addr,
                child: None,
                paused: false,
                starts: 0,
                retired: false,
                join: None,
            })
            .collect();
        Cluster {
            exe: exe.to_path_buf(),
            config_path: config_path.to_path_buf(),
            plant_bug,
            members,
        }
    }

    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.members.iter().position(|m| m.id == id && !m.retired)
    }

    /// Starts member `i` (from its data directory, so a restart recovers from its WAL).
    pub fn start(&mut self, i: usize, at_us: u64) -> std::io::Result<()> {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} is already running", m.name);
        std::fs::create_dir_all(&m.data_dir)?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)?;
        m.starts += 1;
        writeln!(
            log,
            "=== synod chaos: start #{} of {} at t={:.3}s ===",
            m.starts,
            m.name,
            at_us as f64 / 1e6
        )?;
        assert!(!m.retired, "slot {} holds no member", m.name);
        let mut cmd = Command::new(&self.exe);
        cmd.arg("server").arg("--config").arg(&self.config_path);
        match &m.join {
            // A joined member finds its id in its data directory (or, on its first start, by
            // asking the endpoints); --join is ignored once it has joined.
            Some(j) => cmd
                .arg("--join")
                .arg(j.endpoints.join(","))
                .arg("--name")
                .arg(format!("n{}", m.id))
                .arg("--peer-addr")
                .arg(&j.peer_addr)
                .arg("--http-addr")
                .arg(&m.http_addr)
                .arg("--grpc-addr")
                .arg(&j.grpc_addr),
            None => cmd.arg("--id").arg(m.id.to_string()),
        };
        cmd.arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--peer-listen-addr")
            .arg(&m.peer_listen_addr);
        if let Some(bug) = &self.plant_bug {
            cmd.arg("--plant-bug").arg(bug);
        }
        // Logs go to a file: no terminal colour codes in them.
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it runs in the
        // forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        m.child = Some(cmd.spawn()?);
        m.paused = false;
        Ok(())
    }

    /// SIGKILL (after SIGCONT if paused) and reap. A crash: nothing is flushed.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            if m.paused {
                signal(child.id(), libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        m.paused = false;
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(c) = &m.child
            && !m.paused
            && signal(c.id(), libc::SIGSTOP)
        {
            m.paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(c) = &m.child
            && m.paused
        {
            signal(c.id(), libc::SIGCONT);
        }
        m.paused = false;
    }

    /// Members that exited on their own (not killed by us): (name, exit status).
    pub fn exited(&mut self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for m in &mut self.members {
            if let Some(c) = &mut m.child
                && let Ok(Some(status)) = c.try_wait()
            {
                v.push((m.name.clone(), status.to_string()));
                m.child = None;
                m.paused = false;
            }
        }
        v
    }

    /// Slot `i` gets a new member (`id`, joining with `join`) with an empty data directory;
    /// whatever ran there must have been killed. Not started yet.
    pub fn assign(&mut self, i: usize, id: NodeId, join: JoinArgs) -> std::io::Result<()> {
        self.wipe(i)?;
        let m = &mut self.members[i];
        m.id = id;
        m.join = Some(join);
        m.retired = false;
        Ok(())
    }

    /// Deletes slot `i`'s data directory (its member must have been killed): a lost disk.
    pub fn wipe(&mut self, i: usize) -> std::io::Result<()> {
        let m = &self.members[i];
        assert!(m.child.is_none(), "slot {} still runs n{}", m.name, m.id);
        match std::fs::remove_dir_all(&m.data_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Slot `i` no longer holds a member: killed, never restarted.
    pub fn retire(&mut self, i: usize) {
        self.kill(i);
        self.members[i].retired = true;
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own un-reaped child, so it
    // cannot have been recycled for another process.
    unsafe { libc::kill(pid, sig) == 0 }
}
