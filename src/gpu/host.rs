//! The host side: memory, process names, and the engine's process group.
//!
//! vLLM's GPU memory belongs to `VLLM::EngineCore` (and its workers), children of the API server that mqtt-llm
//! launched; all of them stay in the process group the engine actor created for the launch. The group's members
//! are the processes whose group id is `pgid`, plus every descendant of a member (a child that moved to a group
//! of its own is still the engine's). Each call reads `/proc` afresh through a new `sysinfo::System`, so no file
//! stays open between samples.

use std::collections::{HashMap, HashSet};

use nix::unistd::{Pid as NixPid, getpgid};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Host memory: (total, available) bytes. Available counts what the kernel could reclaim (page cache).
pub fn host_memory() -> (u64, u64) {
    let mut sys = System::new();
    sys.refresh_memory();
    (sys.total_memory(), sys.available_memory())
}

/// The pids in the process group `pgid` and all their descendants, this instant. Empty when none is left.
pub fn process_group_members(pgid: i32) -> HashSet<u32> {
    let mut sys = System::new();
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, ProcessRefreshKind::nothing());
    let table: Vec<ProcessRow> = sys
        .processes()
        .iter()
        .filter(|(_, p)| p.thread_kind().is_none())
        .map(|(pid, p)| {
            let pid = pid.as_u32();
            ProcessRow {
                pid,
                parent: p.parent().map(Pid::as_u32),
                pgid: i32::try_from(pid)
                    .ok()
                    .and_then(|raw| getpgid(Some(NixPid::from_raw(raw))).ok())
                    .map(NixPid::as_raw),
            }
        })
        .collect();
    group_closure(&table, pgid)
}

/// Names of the given pids as this host knows them (the kernel's 15-character `comm`); pids not found are absent.
pub fn process_names(pids: &[u32]) -> HashMap<u32, String> {
    let wanted: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
    let mut sys = System::new();
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&wanted), true, ProcessRefreshKind::nothing());
    sys.processes()
        .iter()
        .map(|(pid, p)| (pid.as_u32(), p.name().to_string_lossy().into_owned()))
        .collect()
}

/// One process as the group computation needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessRow {
    pub pid: u32,
    pub parent: Option<u32>,
    /// None when the process exited between listing and asking.
    pub pgid: Option<i32>,
}

/// Members of group `pgid` plus all their descendants (pure, over a process table).
pub(crate) fn group_closure(table: &[ProcessRow], pgid: i32) -> HashSet<u32> {
    let mut members: HashSet<u32> = table
        .iter()
        .filter(|row| row.pgid == Some(pgid))
        .map(|row| row.pid)
        .collect();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for row in table {
        if let Some(parent) = row.parent {
            children.entry(parent).or_default().push(row.pid);
        }
    }
    let mut stack: Vec<u32> = members.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if members.insert(child) {
                stack.push(child);
            }
        }
    }
    members
}

/// `sh -c SCRIPT` as the leader of a new process group, stdout piped, killed on drop: a stand-in for vLLM's
/// API server in tests. Returns it and its pid.
#[cfg(test)]
pub(crate) fn spawn_test_group(script: &str) -> (tokio::process::Child, u32) {
    let leader = tokio::process::Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sh runs");
    let pid = leader.id().expect("a running child has a pid");
    (leader, pid)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn row(pid: u32, parent: u32, pgid: i32) -> ProcessRow {
        ProcessRow {
            pid,
            parent: Some(parent),
            pgid: Some(pgid),
        }
    }

    #[test]
    fn closure_takes_the_group_and_its_descendants() {
        let table = [
            row(1, 0, 1),
            row(100, 1, 100),   // the API server, group leader
            row(101, 100, 100), // VLLM::EngineCore
            row(102, 101, 102), // a worker that made a group of its own
            row(103, 102, 102), // and its child
            row(200, 1, 200),   // someone else
            ProcessRow {
                pid: 104,
                parent: Some(100),
                pgid: None,
            }, // exited while listed: still a descendant
        ];
        let mut got: Vec<u32> = group_closure(&table, 100).into_iter().collect();
        got.sort_unstable();
        assert_eq!(got, vec![100, 101, 102, 103, 104]);
        assert!(group_closure(&table, 999).is_empty());
    }

    #[test]
    fn host_memory_is_plausible() {
        let (total, available) = host_memory();
        assert!(total > 0);
        assert!(available <= total);
    }

    #[test]
    fn this_process_is_in_its_own_group() {
        let pgid = getpgid(None).unwrap().as_raw();
        assert!(process_group_members(pgid).contains(&std::process::id()));
    }

    /// A real group: `sh` as leader of a new group, with two `sleep` children, like vLLM's API server and
    /// EngineCore.
    #[tokio::test]
    async fn members_of_a_spawned_group_are_found() {
        let (mut leader, leader_pid) = spawn_test_group("sleep 30 & sleep 30 & echo started; wait");
        // Readiness, not a sleep: the line comes after both children are forked.
        let mut stdout = leader.stdout.take().unwrap();
        let mut buf = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut buf)
            .await
            .unwrap();

        let pgid = i32::try_from(leader_pid).unwrap();
        let members = process_group_members(pgid);
        assert!(members.contains(&leader_pid), "{members:?}");
        assert_eq!(members.len(), 3, "leader and two sleeps: {members:?}");
        assert!(!members.contains(&std::process::id()));

        // The children may not have exec'd `sleep` yet; the leader's name is settled.
        let names = process_names(&members.iter().copied().collect::<Vec<_>>());
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names.get(&leader_pid).map(String::as_str), Some("sh"));

        nix::sys::signal::killpg(NixPid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL).unwrap();
        tokio::time::timeout(Duration::from_secs(10), leader.wait())
            .await
            .unwrap()
            .unwrap();
    }
}
