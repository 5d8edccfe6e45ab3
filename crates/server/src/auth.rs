//! Authentication: who is calling. Two ways in, both ending in an
//! [`authz::Caller`](crate::authz::Caller):
//!
//! - **API tokens** (`Authorization: Bearer wharf_…`): 32 random bytes, base64url,
//!   shown once; only their SHA-256 is stored. Named per user, scoped (`read` = GET
//!   only, `write`), optionally expiring, revocable.
//! - **UI sessions** (`POST /login`): a random session id in a `Secure; HttpOnly;
//!   SameSite=Strict` cookie (its SHA-256 is the stored row), a fresh id at every login
//!   (no fixation), and a CSRF token that every state-changing request on the cookie
//!   must echo in `X-CSRF-Token`. Bearer calls are exempt (a browser never adds them
//!   by itself).
//!
//! Passwords are Argon2id PHC strings. Login attempts are counted per user and client
//! address before the password is checked; after [`LoginLimiter::MAX_FAILURES`] within
//! the window the pair is locked out (429 with `Retry-After`), even for the right
//! password. At most one hash per core runs at a time ([`HashSlots`]).
//!
//! [`bootstrap`] makes the built-in `admin` user at first start: `WHARF_ADMIN_TOKEN`
//! becomes its API token and `WHARF_ADMIN_PASSWORD` its password when set; otherwise a
//! one-time token and password are generated and shown once.

use crate::authz::{Caller, Role, TokenScope, Via};
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wharf_store::{Store, StoreError, now_ms};

/// The key per-address limits count `ip` by: the address itself, or for IPv6 its /64
/// prefix (an IPv4 address mapped into IPv6 counts as itself). A text that is no
/// address is its own key.
pub fn address_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(std::net::IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

/// The settings key where a Wharf from before users kept the admin token's hash.
const LEGACY_SETTING: &str = "admin_token_sha256";
pub use wharf_store::tenancy::ADMIN_USER;
/// The name of the admin token made at bootstrap (and replaced by `WHARF_ADMIN_TOKEN`).
pub const BOOTSTRAP_TOKEN: &str = "bootstrap";
pub const SESSION_COOKIE: &str = "wharf_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new API token: `wharf_` and 32 random bytes as base64url.
pub fn new_token() -> String {
    format!("wharf_{}", random_b64(32))
}

/// A one-time password for the built-in admin: 18 random bytes as base64url.
pub fn new_password() -> String {
    random_b64(18)
}

/// Hashes a password as an Argon2id PHC string (slow on purpose; call off the async threads).
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("Argon2 hashes any password with a random salt")
        .to_string()
}

/// Checks a password against a stored PHC string; a damaged string never matches.
///
/// Argon2's working memory (19 MiB with the default parameters) is kept per thread and
/// reused: allocated afresh for every check, the allocator kept most of it (measured:
/// resident memory grew by the full 19 MiB at nearly every check, on one thread).
pub fn verify_password(password: &str, phc: &str) -> bool {
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let (Ok(params), Ok(algorithm)) =
        (argon2::Params::try_from(&hash), argon2::Algorithm::try_from(hash.algorithm.as_str()))
    else {
        return false;
    };
    let Ok(version) = hash.version.map(argon2::Version::try_from).transpose() else { return false };
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    let mut out = vec![0u8; expected.len()];
    let hashed = MEMORY.with_borrow_mut(|memory| {
        let blocks = argon2.params().block_count();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
    });
    // `Output` compares in constant time.
    hashed.is_ok() && argon2::password_hash::phc::Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// Constant-time comparison of two strings.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What first start made up and must be shown once, and the admin's password still to
/// hash or check ([`AdminPassword::settle`]).
#[derive(Debug, Default)]
pub struct Generated {
    pub token: Option<String>,
    pub password: Option<String>,
    pub pending: Option<AdminPassword>,
}

/// The built-in admin's configured (or generated) password, to hash when it is new or
/// changed. An Argon2 hash or check takes tens of milliseconds, so the server does it
/// after it listens; logins wait for it (`AppState::passwords_ready`).
pub struct AdminPassword {
    password: String,
    /// The stored hash; `None` at first start.
    current: Option<String>,
}

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPassword").finish_non_exhaustive()
    }
}

impl AdminPassword {
    /// Stores the password's hash unless the stored one already matches it.
    pub async fn settle(self, store: &Store) -> Result<(), StoreError> {
        let AdminPassword { password, current } = self;
        let hash = tokio::task::spawn_blocking(move || match current {
            Some(h) if verify_password(&password, &h) => None,
            _ => Some(hash_password(&password)),
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("password hashing failed: {e}")))?;
        if let Some(hash) = hash {
            store.set_password_hash(ADMIN_USER, &hash).await?;
        }
        Ok(())
    }
}

/// Makes sure the built-in `admin` user exists with a way in: the token now, the
/// password as [`Generated::pending`] (see [`AdminPassword`]).
pub async fn bootstrap(
    store: &Store,
    admin_token: Option<&str>,
    admin_password: Option<&str>,
) -> Result<Generated, StoreError> {
    let mut generated = Generated::default();
    let existing = store.find_user(ADMIN_USER).await?;
    let first_start = existing.is_none();
    if first_start {
        let password = match admin_password {
            Some(p) => p.to_owned(),
            None => {
                let p = new_password();
                generated.password = Some(p.clone());
                p
            }
        };
        // No password hash until `settle`: no password logs in before it.
        store.create_user(ADMIN_USER, Role::Admin.as_str(), None, &[]).await?;
        generated.pending = Some(AdminPassword { password, current: None });
    } else if let Some(password) = admin_password {
        let current = existing.as_ref().and_then(|u| u.password_hash.clone());
        generated.pending = Some(AdminPassword { password: password.to_owned(), current });
    }
    match admin_token {
        Some(token) => {
            store.put_token(ADMIN_USER, BOOTSTRAP_TOKEN, &sha256_hex(token.as_bytes()), "write").await?;
        }
        None if first_start => {
            // A Wharf from before users had one admin token; it keeps working.
            if let Some(hash) = store.setting(LEGACY_SETTING).await? {
                store.put_token(ADMIN_USER, BOOTSTRAP_TOKEN, &hash, "write").await?;
            } else {
                let token = new_token();
                store.put_token(ADMIN_USER, BOOTSTRAP_TOKEN, &sha256_hex(token.as_bytes()), "write").await?;
                generated.token = Some(token);
            }
        }
        None => {}
    }
    Ok(generated)
}

/// The token from an `Authorization` header value (`Bearer <token>`; the scheme is
/// case-insensitive, RFC 9110 §11.1).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Resolves a bearer token to its caller; `None` when unknown, expired, revoked or
/// its user is gone or disabled.
pub async fn caller_from_token(
    store: &Store,
    token: &str,
    client_ip: Option<String>,
) -> Result<Option<Caller>, StoreError> {
    let Some((row, role, projects)) = store.token_with_user(&sha256_hex(token.as_bytes())).await? else {
        return Ok(None);
    };
    let now = now_ms();
    if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at <= now) {
        return Ok(None);
    }
    let (Some(scope), Some(role)) = (TokenScope::parse(&row.scope), Role::parse(&role)) else { return Ok(None) };
    if row.last_used_at.is_none_or(|at| at < now - 60_000) {
        store.touch_token(row.id, now).await?;
    }
    Ok(Some(Caller {
        name: row.user,
        role,
        projects: projects.into_iter().collect(),
        via: Via::Token { scope },
        client_ip,
    }))
}

/// Resolves a session cookie to its caller and the session's CSRF token; `None` when
/// unknown, expired, or its user is gone or disabled.
pub async fn caller_from_session(
    store: &Store,
    session_id: &str,
    client_ip: Option<String>,
) -> Result<Option<(Caller, String)>, StoreError> {
    let id_sha256 = sha256_hex(session_id.as_bytes());
    let Some(session) = store.session(&id_sha256, now_ms()).await? else { return Ok(None) };
    let Some(user) = store.find_user(&session.user).await?.filter(|u| u.disabled_at.is_none()) else {
        return Ok(None);
    };
    let Some(role) = Role::parse(&user.role) else { return Ok(None) };
    let caller = Caller {
        name: user.name,
        role,
        projects: user.projects.into_iter().collect(),
        via: Via::Session { id_sha256 },
        client_ip,
    };
    Ok(Some((caller, session.csrf)))
}

/// A new session: the cookie value (shown only in `Set-Cookie`) and its CSRF token.
pub struct NewSession {
    pub id: String,
    pub csrf: String,
    pub expires_at: i64,
}

pub async fn create_session(
    store: &Store,
    user: &str,
    client_ip: Option<&str>,
    ttl: Duration,
) -> Result<NewSession, StoreError> {
    let id = random_b64(32);
    let csrf = random_b64(32);
    let expires_at = now_ms() + ttl.as_millis() as i64;
    store.create_session(&sha256_hex(id.as_bytes()), user, &csrf, client_ip, expires_at).await?;
    Ok(NewSession { id, csrf, expires_at })
}

/// The `Set-Cookie` value for a session (or, with `None`, one that clears it).
pub fn session_cookie(session: Option<&NewSession>, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match session {
        Some(s) => {
            format!("{SESSION_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}", s.id, ttl.as_secs())
        }
        None => format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

/// Login attempts per (user, client address). An attempt is counted when it starts,
/// before its password is hashed, so parallel attempts cannot pass the lock: at most
/// [`MAX_FAILURES`](Self::MAX_FAILURES) passwords are checked per pair and window. A
/// success forgets the pair.
#[derive(Default)]
pub struct LoginLimiter {
    entries: Mutex<HashMap<(String, String), Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl LoginLimiter {
    /// Attempts allowed within [`WINDOW`](Self::WINDOW) before the lockout.
    pub const MAX_FAILURES: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(15 * 60);
    pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
    /// Pairs remembered at most (expired ones go first, then the oldest).
    pub const MAX_ENTRIES: usize = 10_000;

    /// Counts an attempt before its password is checked: `Ok(tries left after this
    /// one)`, `Ok(0)` for the last one allowed (the pair is locked from now on unless it
    /// succeeds), `Err(seconds to wait)` while the pair is locked out.
    pub fn begin(&self, user: &str, ip: &str) -> Result<u32, u64> {
        self.begin_at(user, ip, Instant::now())
    }

    fn begin_at(&self, user: &str, ip: &str, now: Instant) -> Result<u32, u64> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (user.to_owned(), ip.to_owned());
        if !entries.contains_key(&key) && entries.len() >= Self::MAX_ENTRIES {
            Self::evict(&mut entries, now);
        }
        let entry = entries.entry(key).or_insert(Failures { count: 0, first: now, locked_until: None });
        match entry.locked_until {
            Some(until) if until > now => return Err((until - now).as_secs().max(1)),
            Some(_) => *entry = Failures { count: 0, first: now, locked_until: None },
            None if now.duration_since(entry.first) >= Self::WINDOW => {
                *entry = Failures { count: 0, first: now, locked_until: None }
            }
            None => {}
        }
        entry.count += 1;
        let left = Self::MAX_FAILURES.saturating_sub(entry.count);
        if left == 0 {
            entry.locked_until = Some(now + Self::LOCKOUT);
        }
        Ok(left)
    }

    fn evict(entries: &mut HashMap<(String, String), Failures>, now: Instant) {
        entries.retain(|_, f| match f.locked_until {
            Some(until) => until > now,
            None => now.duration_since(f.first) < Self::WINDOW,
        });
        if entries.len() >= Self::MAX_ENTRIES
            && let Some(oldest) = entries.iter().min_by_key(|(_, f)| f.first).map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
    }

    /// Takes back an attempt whose password was never checked (no hashing slot was free).
    pub fn unchecked(&self, user: &str, ip: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&(user.to_owned(), ip.to_owned())) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count < Self::MAX_FAILURES {
                entry.locked_until = None;
            }
        }
    }

    pub fn succeeded(&self, user: &str, ip: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&(user.to_owned(), ip.to_owned()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// Where login passwords are checked: one thread per core, each running one Argon2
/// hash at a time. Each hash takes its memory (19 MiB with the default parameters) for
/// its whole run, so a flood of logins would otherwise take gigabytes; and on a few
/// long-lived threads the allocator keeps reusing the same memory instead of growing
/// an arena on every blocking thread that ever hashed. A login waits at most
/// [`HASH_WAIT`] for its turn, then is answered 503.
///
/// A turn is held by the hash itself, not by the login waiting for it: a client that
/// hangs up does not free its turn before its hash has run. So at most one job per
/// thread is queued or running, and the queue is bounded to that.
pub struct HashSlots {
    turns: std::sync::Arc<tokio::sync::Semaphore>,
    /// Dropping it ends the threads.
    jobs: Mutex<std::sync::mpsc::SyncSender<Job>>,
}

type Job = Box<dyn FnOnce() + Send>;

/// How long a login waits for a free hashing slot.
pub const HASH_WAIT: Duration = Duration::from_secs(3);

impl Default for HashSlots {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(threads);
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("wharf-hash-{i}")).spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(why) = spawned {
                tracing::error!(%why, "cannot start a password hashing thread");
            }
        }
        HashSlots { turns: std::sync::Arc::new(tokio::sync::Semaphore::new(threads)), jobs: Mutex::new(jobs) }
    }
}

impl HashSlots {
    /// Runs `work` (a password check) on a hashing thread; `None` when no thread was
    /// free within [`HASH_WAIT`].
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let turn = tokio::time::timeout(HASH_WAIT, self.turns.clone().acquire_owned()).await.ok()?.ok()?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
            drop(turn);
        });
        // Never full: a job holds one of as many turns as the queue has places.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).try_send(job).ok()?;
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    /// Argon2 allocated afresh per check left its 19 MiB resident almost every time.
    #[test]
    fn checking_passwords_again_and_again_does_not_grow_memory() {
        let resident_kib = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_owned();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
        };
        let hash = hash_password("right");
        assert!(!verify_password("wrong", &hash));
        let before = resident_kib();
        for _ in 0..8 {
            assert!(!verify_password("wrong", &hash));
        }
        assert!(verify_password("right", &hash));
        let grown_mib = resident_kib().saturating_sub(before) / 1024;
        assert!(grown_mib < 38, "8 checks grew the resident set by {grown_mib} MiB");
    }

    #[test]
    fn tokens_are_32_random_bytes_base64url() {
        let t = new_token();
        let body = t.strip_prefix("wharf_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(new_token(), t);
    }

    #[test]
    fn the_limiter_locks_after_the_maximum_and_per_address() {
        let l = LoginLimiter::default();
        for i in 1..LoginLimiter::MAX_FAILURES {
            assert_eq!(l.begin("ann", "1.2.3.4"), Ok(LoginLimiter::MAX_FAILURES - i));
        }
        assert_eq!(l.begin("ann", "1.2.3.4"), Ok(0), "the last attempt allowed");
        assert!(l.begin("ann", "1.2.3.4").is_err(), "counted before the password is checked");
        assert!(l.begin("ann", "5.6.7.8").is_ok(), "another address is not locked");
        assert!(l.begin("bob", "1.2.3.4").is_ok(), "another user is not locked");
        l.unchecked("ann", "1.2.3.4");
        assert_eq!(l.begin("ann", "1.2.3.4"), Ok(0), "an attempt never checked is taken back");
        l.succeeded("bob", "1.2.3.4");
        let later = Instant::now() + LoginLimiter::LOCKOUT + Duration::from_secs(1);
        assert_eq!(l.begin_at("ann", "1.2.3.4", later), Ok(LoginLimiter::MAX_FAILURES - 1), "the lockout ends");
    }

    #[test]
    fn the_limiter_remembers_a_bounded_number_of_pairs() {
        let l = LoginLimiter::default();
        for i in 0..LoginLimiter::MAX_ENTRIES + 500 {
            assert!(l.begin(&format!("user{i}"), "1.2.3.4").is_ok());
        }
        assert!(l.len() <= LoginLimiter::MAX_ENTRIES, "{}", l.len());
    }

    #[tokio::test]
    async fn a_login_that_hangs_up_keeps_its_hashing_turn_until_the_hash_ends() {
        let slots = HashSlots::default();
        let turns = slots.turns.available_permits();
        let (started, hashing) = tokio::sync::oneshot::channel();
        let (finish, gate) = std::sync::mpsc::channel::<()>();
        let mut login = Box::pin(slots.run(move || {
            let _ = started.send(());
            let _ = gate.recv();
        }));
        tokio::select! {
            _ = &mut login => panic!("the hash cannot end before the gate opens"),
            _ = hashing => {}
        }
        drop(login);
        assert_eq!(slots.turns.available_permits(), turns - 1, "the hash still runs, so its turn is taken");
        finish.send(()).unwrap();
        let all = tokio::time::timeout(Duration::from_secs(10), slots.turns.acquire_many(turns as u32)).await;
        assert!(all.is_ok(), "the turn comes back when the hash ends");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:2:ffff::9"));
        assert_ne!(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:3::1"));
        assert_eq!(address_key("127.0.0.1"), "127.0.0.1");
        assert_eq!(address_key("::ffff:10.0.0.7"), "10.0.0.7", "an IPv4 address mapped into IPv6 is itself");
        assert_eq!(address_key("-"), "-");
    }

    #[test]
    fn headers_are_read() {
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(cookie("a=1; wharf_session=xyz; b=2", SESSION_COOKIE), Some("xyz"));
    }
}
