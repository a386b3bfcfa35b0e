//! The programs the collector starts: hook scripts, Lua's `xe.run`, `db-export`. Each gets a
//! process group of its own, so that killing it at its timeout kills what it started too: a
//! hook script blocked in `curl`, or a loader script in `psql`, left that child running after
//! the script itself was killed.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Starts `cmd` as the leader of a new process group.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.process_group(0).spawn()
}

/// Kills a child started by [`spawn`] and everything in its process group, and reaps it.
pub fn kill(child: &mut Child) {
    // SAFETY: kill(2) on the process group `child` leads (made by `spawn`).
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}
