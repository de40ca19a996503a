//! CPU time of chosen threads, from the kernel's scheduler statistics
//! (`/proc/self/task/<tid>/schedstat`: nanoseconds on a CPU, first field). Wall time alone
//! cannot tell the proxy's work from the client's and the backend's on a shared machine;
//! the proxy's threads' own clock can.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The threads of one runtime; each registers itself when it starts.
#[derive(Clone, Default)]
pub struct ThreadClock {
    /// Thread id and the last time read for it: a thread that has exited (a blocking-pool
    /// thread that idled out) keeps counting what it used.
    threads: Arc<Mutex<Vec<(u32, u64)>>>,
}

impl ThreadClock {
    /// Adds the calling thread; for `on_thread_start`.
    pub fn register_current(&self) {
        let tid = current_tid();
        self.threads.lock().expect("not poisoned").push((tid, 0));
    }

    /// CPU time used so far by every registered thread.
    pub fn elapsed(&self) -> Duration {
        let mut threads = self.threads.lock().expect("not poisoned");
        let mut total = 0;
        for (tid, last) in threads.iter_mut() {
            if let Some(ns) = read_ns(&format!("/proc/self/task/{tid}/schedstat")) {
                *last = ns;
            }
            total += *last;
        }
        Duration::from_nanos(total)
    }
}

/// CPU time of the calling thread.
pub fn this_thread() -> Duration {
    Duration::from_nanos(read_ns("/proc/thread-self/schedstat").unwrap_or(0))
}

fn read_ns(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The kernel's id of the calling thread: `/proc/thread-self` links to `<pid>/task/<tid>`.
fn current_tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name()
        .and_then(|name| name.to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/thread-self target {link:?}"))
}
