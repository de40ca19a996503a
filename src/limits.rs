//! What clients may hold, decided at login: how many sessions each user has (counted once
//! the password is verified, released when the session ends or changes user), and how many
//! logins in a row each client address has failed, which makes its next connections wait
//! (after MySQL's connection_control plugin). Nothing here is on the statement path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, LoginDelay};
use crate::protocol::codes::SqlError;

/// Addresses whose failures are remembered at most; each costs a few dozen bytes, so a
/// flood of logins from many addresses cannot grow the proxy without bound.
const MAX_FAILING_SOURCES: usize = 65_536;
/// Failures older than this are forgotten when room is needed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct Limits {
    /// Sessions per authenticated user. Only configured users get here, so it is as large
    /// as the `[[users]]` list at most.
    sessions: Mutex<HashMap<String, usize>>,
    failures: Mutex<HashMap<Source, Failures>>,
}

/// Where failed logins come from: an IPv4 address, or an IPv6 /64 (one host's usual share
/// of addresses, which it could otherwise rotate through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    /// The network prefix: the upper 64 bits.
    V6(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.into()),
            IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    in_a_row: u32,
    last: Instant,
}

/// A session counted against its user; dropping it releases the count.
pub struct UserSlot {
    limits: Arc<Limits>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut sessions = self
            .limits
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = sessions.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                sessions.remove(&self.user);
            }
        }
    }
}

impl Limits {
    /// Counts a session for `user`, unless the user already holds as many as its entry's
    /// `max_connections` or, without one, `proxy.max_user_connections` allow. The error is
    /// the one MySQL gives for the same limit.
    pub fn open_session(
        self: &Arc<Self>,
        user: &str,
        config: &Config,
    ) -> Result<UserSlot, SqlError> {
        let own = config.users.get(user).and_then(|u| u.max_connections);
        let global = config.limits.max_user_connections;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let held = sessions.get(user).copied().unwrap_or(0);
        match own {
            Some(limit) if held >= limit => return Err(SqlError::user_limit_reached(user, limit)),
            None if global > 0 && held >= global => {
                return Err(SqlError::too_many_user_connections(user));
            }
            _ => {}
        }
        sessions.insert(user.to_owned(), held + 1);
        Ok(UserSlot {
            limits: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Sessions `user` holds now.
    pub fn sessions_of(&self, user: &str) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(user).copied().unwrap_or(0)
    }

    /// How long a new connection from `ip` waits before it is greeted.
    pub fn login_delay(&self, ip: IpAddr, delay: &LoginDelay) -> Duration {
        if delay.after == 0 {
            return Duration::ZERO;
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let in_a_row = failures.get(&ip.into()).map_or(0, |f| f.in_a_row);
        delay.for_failures(in_a_row)
    }

    /// A login (or COM_CHANGE_USER) from `ip` failed; returns the failures in a row.
    pub fn login_failed(&self, ip: IpAddr) -> u32 {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_FAILING_SOURCES && !failures.contains_key(&ip.into()) {
            make_room(&mut failures, now);
        }
        let entry = failures.entry(ip.into()).or_insert(Failures {
            in_a_row: 0,
            last: now,
        });
        entry.in_a_row = entry.in_a_row.saturating_add(1);
        entry.last = now;
        entry.in_a_row
    }

    /// A login from `ip` succeeded: its next connections do not wait.
    pub fn login_succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&ip.into());
    }

    /// Addresses with failures remembered now.
    pub fn failing_sources(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// Forgets old failures; if that is not enough, the older half. Amortised, each failure
/// recorded costs O(1) however many addresses take part.
fn make_room(failures: &mut HashMap<Source, Failures>, now: Instant) {
    failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
    if failures.len() < MAX_FAILING_SOURCES * 3 / 4 {
        return;
    }
    let mut ages: Vec<Instant> = failures.values().map(|f| f.last).collect();
    let middle = ages.len() / 2;
    let (_, median, _) = ages.select_nth_unstable(middle);
    let median = *median;
    failures.retain(|_, f| f.last > median);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides};

    fn config(text: &str) -> Config {
        let file: FileConfig = toml::from_str(text).unwrap();
        Config::from_file(file, &Overrides::default(), &|_| None).unwrap()
    }

    #[test]
    fn sessions_are_counted_per_user_and_released() {
        let config = config(
            "[proxy]\nmax_user_connections = 2\n\
             [[users]]\nname = 'app'\npassword = 'x'\n\
             [[users]]\nname = 'report'\npassword = 'y'\nmax_connections = 1\n",
        );
        let limits = Arc::new(Limits::default());
        let a = limits.open_session("app", &config).unwrap();
        let _b = limits.open_session("app", &config).unwrap();
        let err = limits.open_session("app", &config).err().unwrap();
        assert_eq!((err.code, &err.state), (1203, b"42000"));
        let _r = limits.open_session("report", &config).unwrap();
        let err = limits.open_session("report", &config).err().unwrap();
        assert_eq!((err.code, &err.state), (1226, b"42000"));
        assert!(err.message.contains("current value: 1"), "{err}");
        drop(a);
        assert_eq!(limits.sessions_of("app"), 1);
        let _c = limits.open_session("app", &config).unwrap();

        let unlimited = self::config("[[users]]\nname = 'app'\npassword = 'x'\n");
        let many: Vec<_> = (0..100)
            .map(|_| limits.open_session("app", &unlimited).unwrap())
            .collect();
        assert_eq!(limits.sessions_of("app"), 102);
        drop(many);
        assert_eq!(limits.sessions_of("app"), 2);
    }

    #[test]
    fn failures_in_a_row_delay_an_address_until_it_succeeds() {
        let delay = LoginDelay {
            after: 2,
            step: Duration::from_secs(1),
            max: Duration::from_secs(3),
        };
        let limits = Limits::default();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        assert_eq!(limits.login_failed(ip), 1);
        assert_eq!(limits.login_delay(ip, &delay), Duration::ZERO);
        assert_eq!(limits.login_failed(ip), 2);
        assert_eq!(limits.login_delay(ip, &delay), Duration::from_secs(1));
        limits.login_failed(ip);
        assert_eq!(limits.login_delay(ip, &delay), Duration::from_secs(2));
        for _ in 0..10 {
            limits.login_failed(ip);
        }
        assert_eq!(limits.login_delay(ip, &delay), Duration::from_secs(3));
        assert_eq!(limits.login_delay(other, &delay), Duration::ZERO);
        // The same host over IPv4-mapped IPv6 is the same source.
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(limits.login_delay(mapped, &delay), Duration::from_secs(3));
        limits.login_succeeded(ip);
        assert_eq!(limits.login_delay(ip, &delay), Duration::ZERO);
    }

    #[test]
    fn an_ipv6_host_cannot_escape_by_changing_its_interface_id() {
        let delay = LoginDelay {
            after: 1,
            step: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        let limits = Limits::default();
        limits.login_failed("2001:db8:1:2::1".parse().unwrap());
        limits.login_failed("2001:db8:1:2:ffff::9".parse().unwrap());
        let same_64: IpAddr = "2001:db8:1:2::77".parse().unwrap();
        assert_eq!(limits.login_delay(same_64, &delay), Duration::from_secs(2));
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limits.login_delay(next_64, &delay), Duration::ZERO);
        let v4: IpAddr = "0.0.0.1".parse().unwrap();
        assert_eq!(limits.login_delay(v4, &delay), Duration::ZERO);
    }

    #[test]
    fn failures_from_many_addresses_stay_bounded() {
        let limits = Limits::default();
        for i in 0..(MAX_FAILING_SOURCES as u32 * 3) {
            limits.login_failed(IpAddr::V4(i.into()));
            assert!(limits.failing_sources() <= MAX_FAILING_SOURCES);
        }
        // The latest are remembered.
        let last = IpAddr::V4((MAX_FAILING_SOURCES as u32 * 3 - 1).into());
        let delay = LoginDelay {
            after: 1,
            step: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
        assert_eq!(limits.login_delay(last, &delay), Duration::from_secs(1));
    }
}
