//! The command table run against an in-memory [`Backend`]: each command family's exact
//! reply bytes, in RESP2 and, where they differ, RESP3.

use std::collections::BTreeMap;

use super::*;
use crate::reply::Protocol;

mod atomic;
mod keys;
mod server;
mod table;

/// A store in a `BTreeMap`, with the host's decisions a test can set: keys whose writes
/// are refused (`NOPERM`), the one token `AUTH` accepts, whether `INFO`/`DBSIZE`/`CLIENT`
/// need one, and whether the host reports store stats.
#[derive(Default)]
struct Memory {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Deadlines of the keys that have one (ms since the Unix epoch).
    deadlines: BTreeMap<Vec<u8>, u64>,
    /// The clock, as `clock_ms` answers and updates are evaluated at.
    now: u64,
    refused: Vec<&'static [u8]>,
    require_auth: bool,
    no_stats: bool,
    /// Every store call, in order, to check that reads come before writes.
    calls: Vec<String>,
}

const TOKEN: &str = "good-token";

impl Memory {
    fn refuse(&self, key: &[u8]) -> Result<(), StoreError> {
        if self.refused.contains(&key) {
            return Err(StoreError {
                kind: ErrorKind::PermissionDenied,
                message: format!("no role grants a write of {}", String::from_utf8_lossy(key)),
            });
        }
        Ok(())
    }

    /// Makes an evaluated update's effect on `key`.
    fn apply(&mut self, key: Vec<u8>, effect: kvs_plugin_api::update::Effect) {
        use kvs_plugin_api::update::Effect;
        match effect {
            Effect::Nothing => {}
            Effect::Delete => {
                self.map.remove(&key);
                self.deadlines.remove(&key);
            }
            Effect::Put { value, deadline } => {
                self.map.insert(key.clone(), value);
                match deadline {
                    Some(d) => self.deadlines.insert(key, d),
                    None => self.deadlines.remove(&key),
                };
            }
        }
    }
}

impl Backend for Memory {
    fn get(&mut self, _: &Session, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.calls
            .push(format!("get {}", String::from_utf8_lossy(key)));
        if key == b"broken" {
            return Err(StoreError {
                kind: ErrorKind::Other,
                message: "the store is unavailable".into(),
            });
        }
        let expired = self.deadlines.get(key).is_some_and(|&d| d <= self.now);
        Ok(self.map.get(key).filter(|_| !expired).cloned())
    }
    fn put(&mut self, _: &Session, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.calls
            .push(format!("put {}", String::from_utf8_lossy(key)));
        self.refuse(key)?;
        self.map.insert(key.to_vec(), value.to_vec());
        self.deadlines.remove(key);
        Ok(())
    }
    fn delete(&mut self, _: &Session, key: &[u8]) -> Result<(), StoreError> {
        self.calls
            .push(format!("delete {}", String::from_utf8_lossy(key)));
        self.refuse(key)?;
        self.map.remove(key);
        self.deadlines.remove(key);
        Ok(())
    }
    fn check_write(&mut self, _: &Session, key: &[u8], _: Option<&[u8]>) -> Result<(), StoreError> {
        self.refuse(key)
    }
    fn update(
        &mut self,
        session: &Session,
        update: kvs_plugin_api::Update,
        render: Render,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        use kvs_plugin_api::update::{Current, evaluate};
        self.calls
            .push(format!("update {}", String::from_utf8_lossy(&update.key)));
        self.refuse(&update.key)?;
        let key = update.key.clone();
        let deadline = self.deadlines.get(&key).copied();
        let current = self
            .map
            .get(&key)
            .filter(|_| deadline.is_none_or(|d| d > self.now))
            .map(|v| Current {
                value: v.clone(),
                revision: 1,
                deadline,
            });
        match evaluate(&update, current.as_ref(), self.now, 1 << 20) {
            Err(refused) => {
                Reply::new(out, session.protocol).error(&format!("ERR {}", refused.message));
            }
            Ok((effect, outcome)) => {
                self.apply(key, effect);
                render(&outcome, &mut Reply::new(out, session.protocol));
            }
        }
        Ok(())
    }
    fn transact(
        &mut self,
        session: &Session,
        transaction: kvs_plugin_api::Transaction,
        render: Render,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        use kvs_plugin_api::update::{Current, evaluate_transaction};
        for step in &transaction.steps {
            self.refuse(&step.update.key)?;
        }
        self.calls
            .push(format!("transact {}", transaction.steps.len()));
        let now = self.now;
        let state = |key: &[u8]| {
            let deadline = self.deadlines.get(key).copied();
            self.map
                .get(key)
                .filter(|_| deadline.is_none_or(|d| d > now))
                .map(|v| Current {
                    value: v.clone(),
                    revision: 1,
                    deadline,
                })
        };
        match evaluate_transaction(&transaction, state, now, 1 << 20) {
            Err(refused) => {
                Reply::new(out, session.protocol).error(&format!("ERR {}", refused.message));
            }
            Ok((effects, outcomes)) => {
                for (step, effect) in transaction.steps.iter().zip(effects) {
                    self.apply(step.update.key.clone(), effect);
                }
                render(&outcomes[0], &mut Reply::new(out, session.protocol));
            }
        }
        Ok(())
    }
    fn get_entry(
        &mut self,
        _: &Session,
        key: &[u8],
    ) -> Result<Option<kvs_plugin_api::update::Entry>, StoreError> {
        let expires_at = self.deadlines.get(key).copied();
        if expires_at.is_some_and(|d| d <= self.now) {
            return Ok(None);
        }
        Ok(self.map.get(key).map(|v| kvs_plugin_api::update::Entry {
            value: v.clone(),
            revision: 1,
            expires_at,
        }))
    }
    fn clock_ms(&self) -> u64 {
        self.now
    }
    fn info(&self) -> ServerInfo {
        ServerInfo {
            kvs_version: "0.1.0".into(),
            frontend: "resp".into(),
            tcp_port: 6379,
            uptime_secs: 7,
            connected_clients: 2,
            total_connections: 5,
            total_commands: 11,
            keys: (!self.no_stats).then_some(self.map.len() as u64),
            data_bytes: (!self.no_stats).then(|| {
                self.map
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum()
            }),
        }
    }
    fn authenticate(&mut self, session: &mut Session, token: &[u8]) -> Result<(), StoreError> {
        if token != TOKEN.as_bytes() {
            return Err(StoreError {
                kind: ErrorKind::Unauthenticated,
                message: "invalid token".into(),
            });
        }
        session.token = Some(TOKEN.into());
        Ok(())
    }
    fn check_authenticated(&mut self, session: &Session) -> Result<(), StoreError> {
        if self.require_auth && session.token.is_none() {
            return Err(StoreError {
                kind: ErrorKind::Unauthenticated,
                message: "authentication required".into(),
            });
        }
        Ok(())
    }
}

/// A connection to a backend: runs commands written as space-separated words.
struct Conn {
    session: Session,
    backend: Memory,
}

impl Conn {
    fn new() -> Conn {
        Conn::with(Memory::default())
    }
    fn with(backend: Memory) -> Conn {
        Conn {
            session: Session {
                id: 42,
                ..Session::default()
            },
            backend,
        }
    }
    fn resp3(mut self) -> Conn {
        self.session.protocol = Protocol::Resp3;
        self
    }
    /// Runs `command` (split on spaces) and returns its reply as text and the flow.
    fn run_flow(&mut self, command: &str) -> (String, Flow) {
        let args: Vec<&[u8]> = command.split(' ').map(str::as_bytes).collect();
        self.run_args(&args)
    }
    fn run_args(&mut self, args: &[&[u8]]) -> (String, Flow) {
        let mut out = Vec::new();
        let flow = execute(args, &mut self.session, &mut self.backend, &mut out);
        (String::from_utf8(out).unwrap(), flow)
    }
    fn run(&mut self, command: &str) -> String {
        let (reply, flow) = self.run_flow(command);
        assert_eq!(flow, Flow::Continue, "{command}");
        reply
    }
    fn set(&mut self, key: &str, value: &str) {
        self.backend
            .map
            .insert(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    }
    fn value(&self, key: &str) -> Option<&[u8]> {
        self.backend.map.get(key.as_bytes()).map(Vec::as_slice)
    }
}
