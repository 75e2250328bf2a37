//! Fencing at the driver boundary: no mutating BMC request leaves a process
//! whose lease may have expired.
//!
//! In a cluster each node is owned by one conductor at a time, through a key
//! on that conductor's lease; the key's create revision is the node's
//! fencing token. Checking ownership (a guarded transaction) before a BMC
//! call is not enough: the process can stop between the check and the
//! request (SIGSTOP, a partition, a slow disk) for longer than its lease,
//! while another conductor takes the node over, and then send the request
//! anyway. So every mutating request checks a local deadline immediately
//! before it is sent: when the last successful keepalive was *sent*, plus
//! the TTL, minus a margin. The check reads two atomics and takes no lock.
//! What it hands back caps the request's own timeout at the time left, so a
//! request sent just before the deadline cannot outlive the lease either,
//! and carries the token, which a BMC that keeps one (the fake) compares.
//!
//! The drivers take no permit argument: the runner makes the node's permit
//! the current one for the task ([`within`]) and the drivers read it
//! ([`check`]). Outside [`within`] (`rivet reconcile`, tests) a call acts as
//! [`Permit::solo`] of this machine: a single conductor is never fenced.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::DriverError;
use crate::model::node::Node;

/// The local view of a lease: until when this process may act on a BMC.
pub struct LeaseClock {
    /// What the deadlines below count from.
    epoch: Instant,
    margin: Duration,
    /// Nanoseconds after `epoch` until which requests may be sent; 0 while
    /// expired.
    valid_until: AtomicU64,
    /// One more than the nanoseconds after `epoch` of the last `expire`
    /// (0: never): a keepalive sent before it cannot revive the lease.
    lost_after: AtomicU64,
    fenced: AtomicU64,
}

impl LeaseClock {
    /// A clock that starts expired: nothing is sent before the first
    /// keepalive succeeds.
    pub fn new(margin: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            margin,
            valid_until: AtomicU64::new(0),
            lost_after: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    /// A keepalive sent at `sent_at` succeeded with `ttl`: requests may be
    /// sent until `sent_at + ttl - margin`. The deadline never moves
    /// backwards, and a keepalive sent before the last [`expire`] changes
    /// nothing (its answer may arrive after the loss was noticed).
    ///
    /// [`expire`]: LeaseClock::expire
    pub fn renewed(&self, sent_at: Instant, ttl: Duration) {
        let Some(until) = sent_at
            .checked_add(ttl)
            .and_then(|end| end.checked_sub(self.margin))
        else {
            return;
        };
        let (sent, until) = (self.nanos(sent_at), self.nanos(until));
        let mut current = self.valid_until.load(Ordering::SeqCst);
        loop {
            // Read again on every try: an `expire` between two tries wins.
            if sent < self.lost_after.load(Ordering::SeqCst) || until <= current {
                return;
            }
            match self.valid_until.compare_exchange(
                current,
                until,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
    }

    /// The lease is lost: every check fails until a keepalive sent after
    /// now succeeds.
    pub fn expire(&self) {
        let now = self.nanos(Instant::now());
        self.lost_after
            .store(now.saturating_add(1), Ordering::SeqCst);
        self.valid_until.store(0, Ordering::SeqCst);
    }

    /// How long requests may still be sent; `None` when expired.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.valid_until.load(Ordering::SeqCst);
        let now = self.nanos(Instant::now());
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// Checks refused so far (for `/metrics`).
    pub fn fenced_calls(&self) -> u64 {
        self.fenced.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for LeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClock")
            .field("margin", &self.margin)
            .field("remaining", &self.remaining())
            .field("fenced_calls", &self.fenced_calls())
            .finish()
    }
}

/// What a mutating call carries: who sends it, with which fencing token,
/// under which clock.
#[derive(Clone, Debug)]
pub struct Permit {
    pub host: Arc<str>,
    pub token: i64,
    /// `None`: a single conductor, always valid.
    pub clock: Option<Arc<LeaseClock>>,
}

impl Permit {
    /// A single conductor's permit: token 0, no clock.
    pub fn solo(host: &str) -> Self {
        Self {
            host: Arc::from(host),
            token: 0,
            clock: None,
        }
    }
}

/// Where permits come from: the cluster answers per node; a single daemon
/// always grants.
pub trait Permits: Send + Sync {
    fn permit(&self, node: &Node) -> Result<Permit, Fenced>;
}

/// Why a permit was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Fenced(pub String);

/// A single conductor: every node's permit is its own.
pub struct Solo(pub Arc<str>);

impl Permits for Solo {
    fn permit(&self, _node: &Node) -> Result<Permit, Fenced> {
        Ok(Permit {
            host: Arc::clone(&self.0),
            token: 0,
            clock: None,
        })
    }
}

tokio::task_local! {
    static CURRENT: Permit;
}

/// Run `f` with `permit` as the current permit: the drivers it calls read
/// it. Tasks `f` spawns do not inherit it.
pub async fn within<F: Future>(permit: Permit, f: F) -> F::Output {
    CURRENT.scope(permit, f).await
}

/// What a request that may be sent needs: who sends it, its token, and the
/// longest it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub host: Arc<str>,
    pub token: i64,
    /// The time left on the lease; `None` without a clock.
    pub timeout: Option<Duration>,
}

impl Sent {
    /// `configured`, cut to the time left on the lease.
    pub fn cap(&self, configured: Duration) -> Duration {
        self.timeout.map_or(configured, |left| left.min(configured))
    }
}

/// The permit outside [`within`]: this machine, alone.
fn solo() -> &'static Permit {
    static SOLO: OnceLock<Permit> = OnceLock::new();
    SOLO.get_or_init(|| Permit::solo(&crate::model::fleet::local_hostname()))
}

/// Call immediately before sending a mutating request (`what` names it for
/// the error): fails with [`ErrorKind::Fenced`](super::ErrorKind::Fenced)
/// when the current permit's clock has expired, counting it in
/// [`LeaseClock::fenced_calls`].
pub fn check(what: &str) -> Result<Sent, DriverError> {
    CURRENT
        .try_with(|permit| check_permit(permit, what))
        .unwrap_or_else(|_| check_permit(solo(), what))
}

fn check_permit(permit: &Permit, what: &str) -> Result<Sent, DriverError> {
    let timeout = match &permit.clock {
        None => None,
        Some(clock) => match clock.remaining() {
            Some(left) => Some(left),
            None => {
                clock.fenced.fetch_add(1, Ordering::Relaxed);
                return Err(DriverError::fenced(format!(
                    "{what} was not sent: the lease of conductor {} has expired, so another conductor may own the node now",
                    permit.host
                )));
            }
        },
    };
    Ok(Sent {
        host: Arc::clone(&permit.host),
        token: permit.token,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::ErrorKind;

    const TTL: Duration = Duration::from_secs(10);

    fn clocked(clock: &Arc<LeaseClock>, token: i64) -> Permit {
        Permit {
            host: Arc::from("c1"),
            token,
            clock: Some(Arc::clone(clock)),
        }
    }

    #[test]
    fn a_clock_starts_expired_and_is_valid_until_sent_plus_ttl_minus_margin() {
        let clock = LeaseClock::new(Duration::from_secs(2));
        assert_eq!(clock.remaining(), None);
        let sent = Instant::now();
        clock.renewed(sent, TTL);
        let left = clock.remaining().expect("renewed");
        assert!(left <= Duration::from_secs(8), "{left:?}");
        assert!(left > Duration::from_secs(7), "{left:?}");
        assert_eq!(clock.margin(), Duration::from_secs(2));
    }

    #[test]
    fn the_deadline_never_moves_backwards() {
        let clock = LeaseClock::new(Duration::ZERO);
        let now = Instant::now();
        clock.renewed(now, TTL);
        // An older keepalive's answer arriving late.
        clock.renewed(now, Duration::from_secs(1));
        assert!(clock.remaining().unwrap() > Duration::from_secs(9));
    }

    #[test]
    fn a_ttl_within_the_margin_leaves_the_clock_expired() {
        let clock = LeaseClock::new(Duration::from_secs(3));
        clock.renewed(Instant::now(), Duration::from_secs(2));
        assert_eq!(clock.remaining(), None);
    }

    #[test]
    fn expire_ends_the_lease_and_only_a_later_keepalive_renews_it() {
        let clock = LeaseClock::new(Duration::ZERO);
        let before = Instant::now();
        clock.renewed(before, TTL);
        clock.expire();
        assert_eq!(clock.remaining(), None);
        clock.renewed(before, TTL);
        assert_eq!(
            clock.remaining(),
            None,
            "a keepalive sent before the loss does not revive the lease"
        );
        clock.renewed(Instant::now(), TTL);
        assert!(clock.remaining().is_some());
    }

    #[tokio::test]
    async fn check_refuses_under_an_expired_clock_and_counts_it() {
        let clock = Arc::new(LeaseClock::new(Duration::ZERO));
        clock.renewed(Instant::now(), TTL);
        let sent = within(clocked(&clock, 7), async { check("power on") })
            .await
            .unwrap();
        assert_eq!((&*sent.host, sent.token), ("c1", 7));
        assert!(sent.timeout.is_some_and(|t| t <= TTL));
        assert_eq!(sent.cap(Duration::from_secs(30)), sent.timeout.unwrap());
        assert_eq!(sent.cap(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(clock.fenced_calls(), 0);

        clock.expire();
        let refused = within(clocked(&clock, 7), async { check("power on") })
            .await
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Fenced);
        assert!(!refused.is_retryable());
        assert!(refused.message.starts_with("power on was not sent"));
        assert_eq!(clock.fenced_calls(), 1);
    }

    #[tokio::test]
    async fn outside_within_a_call_is_this_machine_alone() {
        let sent = check("power on").unwrap();
        assert_eq!(sent.token, 0);
        assert_eq!(sent.timeout, None);
        assert_eq!(&*sent.host, crate::model::fleet::local_hostname());
        let permit = Permit::solo("c9");
        assert_eq!((&*permit.host, permit.token), ("c9", 0));
        assert!(permit.clock.is_none());
    }
}
