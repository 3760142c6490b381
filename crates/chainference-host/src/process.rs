//! Child processes that must not outlive their owner, and waiting for something to be ready.

use std::ops::{Deref, DerefMut};
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process killed and reaped when dropped (a validator, a model server): a test or a
/// command that fails half-way leaves nothing running.
#[derive(Debug)]
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        KillOnDrop(child)
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Calls `probe` every `interval` until it returns `Ok(Some(_))` or an error, or `timeout` has
/// passed (`Ok(None)`). The probe is called at least once.
pub fn wait_until<T, E>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let started = Instant::now();
    loop {
        if let Some(ready) = probe()? {
            return Ok(Some(ready));
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_ready_or_gives_up() {
        let mut calls = 0;
        let ready: Result<Option<u32>, ()> = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        });
        assert_eq!(ready, Ok(Some(3)));
        let never: Result<Option<()>, ()> =
            wait_until(Duration::from_millis(20), Duration::from_millis(5), || Ok(None));
        assert_eq!(never, Ok(None));
        let failed: Result<Option<()>, &str> =
            wait_until(Duration::from_secs(5), Duration::from_millis(1), || Err("gone"));
        assert_eq!(failed, Err("gone"));
    }

    #[test]
    fn kills_its_child_when_dropped() {
        let child = std::process::Command::new("sleep").arg("30").spawn();
        let Ok(child) = child else { return };
        let pid = child.id();
        drop(KillOnDrop::new(child));
        // Reaped: the pid no longer names a live process of ours.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("sleep"))
        );
    }
}
