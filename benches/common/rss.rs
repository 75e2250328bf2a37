//! Resource usage of child processes, for benchmarks that run `rivet`.

// Each user takes the part it needs.
#![allow(dead_code)]

/// What the children that have exited so far used, together.
fn children_usage() -> libc::rusage {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer it is given.
    unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    }
}

/// The largest peak RSS (KiB) of any child process that has exited so far.
pub fn peak_child_rss_kb() -> i64 {
    children_usage().ru_maxrss
}

/// CPU time of every child that has exited so far, in seconds: (user, system).
pub fn children_cpu_seconds() -> (f64, f64) {
    let usage = children_usage();
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}
