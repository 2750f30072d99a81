//! The command table run against an in-memory [`Backend`]: each command family's exact
//! reply bytes, in RESP2 and, where they differ, RESP3.

use std::collections::BTreeMap;

use super::*;
use crate::reply::Protocol;

/// A store in a `BTreeMap`, with the host's decisions a test can set: keys whose writes
/// are refused (`NOPERM`), the one token `AUTH` accepts, whether `INFO`/`DBSIZE`/`CLIENT`
/// need one, and whether the host reports store stats.
#[derive(Default)]
struct Memory {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
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
        Ok(self.map.get(key).cloned())
    }
    fn put(&mut self, _: &Session, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.calls
            .push(format!("put {}", String::from_utf8_lossy(key)));
        self.refuse(key)?;
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, _: &Session, key: &[u8]) -> Result<(), StoreError> {
        self.calls
            .push(format!("delete {}", String::from_utf8_lossy(key)));
        self.refuse(key)?;
        self.map.remove(key);
        Ok(())
    }
    fn check_write(&mut self, _: &Session, key: &[u8], _: Option<&[u8]>) -> Result<(), StoreError> {
        self.refuse(key)
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

#[test]
fn get_and_set() {
    let mut c = Conn::new();
    assert_eq!(c.run("GET k"), "$-1\r\n");
    assert_eq!(c.run("SET k hello"), "+OK\r\n");
    assert_eq!(c.value("k"), Some(&b"hello"[..]));
    assert_eq!(c.run("get k"), "$5\r\nhello\r\n");
    // Binary-safe: a value with CR LF and a NUL comes back as sent.
    let (reply, _) = c.run_args(&[b"SET", b"bin", b"a\r\n\0b"]);
    assert_eq!(reply, "+OK\r\n");
    assert_eq!(c.run("GET bin"), "$5\r\na\r\n\0b\r\n");
    assert_eq!(c.session.commands, 5);
    // RESP3's null is its own type.
    assert_eq!(Conn::new().resp3().run("GET missing"), "_\r\n");
}

#[test]
fn set_options_are_refused_and_write_nothing() {
    let mut c = Conn::new();
    assert_eq!(
        c.run("SET k v nx"),
        "-ERR SET with NX is not supported by kvs: its store has no atomic compare-and-set \
         and keys do not expire; use SET key value\r\n"
    );
    assert_eq!(
        c.run("SET k v EX 10"),
        "-ERR SET with EX is not supported by kvs: its store has no atomic compare-and-set \
         and keys do not expire; use SET key value\r\n"
    );
    assert_eq!(c.value("k"), None);
    assert!(c.backend.calls.is_empty(), "{:?}", c.backend.calls);
}

#[test]
fn a_store_error_is_the_reply() {
    let mut c = Conn::new();
    assert_eq!(c.run("GET broken"), "-ERR the store is unavailable\r\n");
    c.backend.refused = vec![b"ro"];
    assert_eq!(
        c.run("SET ro v"),
        "-NOPERM no role grants a write of ro\r\n"
    );
}

#[test]
fn mget_in_both_protocols() {
    let mut c = Conn::new();
    c.set("a", "1");
    c.set("c", "333");
    assert_eq!(c.run("MGET a b c"), "*3\r\n$1\r\n1\r\n$-1\r\n$3\r\n333\r\n");
    let mut c = Conn::with(std::mem::take(&mut c.backend)).resp3();
    assert_eq!(c.run("MGET a b c"), "*3\r\n$1\r\n1\r\n_\r\n$3\r\n333\r\n");
}

#[test]
fn mget_refuses_a_reply_over_the_limit() {
    let mut c = Conn::new();
    c.set("a", "0123456789");
    c.session.max_reply_bytes = Some(40);
    // Each value counts its length plus 16: 26, then 52 > 40.
    assert_eq!(c.run("MGET a"), "*1\r\n$10\r\n0123456789\r\n");
    assert_eq!(
        c.run("MGET a a"),
        "-ERR MGET's reply would be over 40 bytes (max_reply_bytes): ask for fewer keys at \
         a time\r\n"
    );
}

#[test]
fn mset_writes_every_pair_or_none() {
    let mut c = Conn::new();
    assert_eq!(c.run("MSET a 1 b 2"), "+OK\r\n");
    assert_eq!(
        (c.value("a"), c.value("b")),
        (Some(&b"1"[..]), Some(&b"2"[..]))
    );
    assert_eq!(
        c.run("MSET a 1 b"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(
        c.run("MSET a"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    // One refused key refuses the whole command: nothing is written, not even the pairs
    // before it.
    c.backend.refused = vec![b"locked"];
    c.backend.calls.clear();
    assert_eq!(
        c.run("MSET a 10 locked 20 z 30"),
        "-NOPERM no role grants a write of locked\r\n"
    );
    assert_eq!(c.value("a"), Some(&b"1"[..]));
    assert_eq!(c.value("z"), None);
    assert!(c.backend.calls.is_empty(), "{:?}", c.backend.calls);
}

#[test]
fn del_and_exists_count_keys() {
    let mut c = Conn::new();
    c.set("a", "1");
    c.set("b", "2");
    c.set("c", "3");
    // EXISTS counts a key each time it is named; DEL counts what it removed, once.
    assert_eq!(c.run("EXISTS a a missing b"), ":3\r\n");
    assert_eq!(c.run("DEL a a b missing"), ":2\r\n");
    assert_eq!(c.value("a"), None);
    assert_eq!(c.value("b"), None);
    assert_eq!(c.run("EXISTS a b c"), ":1\r\n");
    assert_eq!(c.run("DEL a"), ":0\r\n");
    // Every read of the command before any of its writes.
    c.backend.calls.clear();
    assert_eq!(c.run("DEL c x"), ":1\r\n");
    assert_eq!(c.backend.calls, ["get c", "get x", "delete c", "delete x"]);
    // A refused key: nothing deleted.
    c.set("c", "3");
    c.backend.refused = vec![b"locked"];
    assert_eq!(
        c.run("DEL c locked"),
        "-NOPERM no role grants a write of locked\r\n"
    );
    assert_eq!(c.value("c"), Some(&b"3"[..]));
}

#[test]
fn strlen() {
    let mut c = Conn::new();
    c.set("k", "hello");
    assert_eq!(c.run("STRLEN k"), ":5\r\n");
    assert_eq!(c.run("STRLEN missing"), ":0\r\n");
}

#[test]
fn arity_errors_name_the_command_in_lower_case() {
    let mut c = Conn::new();
    for (command, name) in [
        ("GET", "get"),
        ("GET a b", "get"),
        ("Set k", "set"),
        ("STRLEN", "strlen"),
        ("DEL", "del"),
        ("ECHO", "echo"),
        ("ECHO a b", "echo"),
        ("DBSIZE x", "dbsize"),
        ("PING a b", "ping"),
        ("AUTH a b c", "auth"),
        ("SELECT", "select"),
        ("CLIENT", "client"),
        ("CONFIG", "config"),
    ] {
        assert_eq!(
            c.run(command),
            format!("-ERR wrong number of arguments for '{name}' command\r\n"),
            "{command}"
        );
    }
    assert!(c.backend.map.is_empty() && c.backend.calls.is_empty());
}

#[test]
fn unknown_and_unsupported_commands() {
    let mut c = Conn::new();
    assert_eq!(
        c.run("FOO bar baz"),
        "-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz'\r\n"
    );
    assert_eq!(
        c.run("NOPE"),
        "-ERR unknown command 'NOPE', with args beginning with: \r\n"
    );
    assert_eq!(
        c.run("INCR counter"),
        "-ERR 'incr' is not supported by kvs: the store offers no atomic read-modify-write\r\n"
    );
    assert_eq!(
        c.run("expire k 10"),
        "-ERR 'expire' is not supported by kvs: kvs keys do not expire\r\n"
    );
    assert_eq!(
        c.run("KEYS *"),
        "-ERR 'keys' is not supported by kvs: kvs does not list or drop keys in bulk\r\n"
    );
    assert_eq!(
        c.run("MULTI"),
        "-ERR 'multi' is not supported by kvs: kvs has no transactions or scripts\r\n"
    );
    // An empty command is no command: nothing is answered or counted.
    let before = c.session.commands;
    assert_eq!(c.run_args(&[]), (String::new(), Flow::Continue));
    assert_eq!(c.session.commands, before);
}

#[test]
fn command_describes_the_table() {
    let mut c = Conn::new();
    assert_eq!(TABLE.len(), 18);
    assert_eq!(c.run("COMMAND COUNT"), ":18\r\n");
    let get = "*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
               *0\r\n*0\r\n*0\r\n*0\r\n";
    let mset = "*10\r\n$4\r\nmset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:-1\r\n:2\r\n\
                *0\r\n*0\r\n*0\r\n*0\r\n";
    assert_eq!(
        c.run("COMMAND INFO get nosuch MSET"),
        format!("*3\r\n{get}$-1\r\n{mset}")
    );
    assert_eq!(
        Conn::new().resp3().run("COMMAND INFO nosuch"),
        "*1\r\n_\r\n"
    );
    let all = c.run("COMMAND");
    assert!(all.starts_with(&format!("*18\r\n{get}")), "{all}");
    assert!(all.ends_with(
        "*10\r\n$6\r\nconfig\r\n:-2\r\n*3\r\n+admin\r\n+loading\r\n+stale\r\n:0\r\n:0\r\n\
         :0\r\n*0\r\n*0\r\n*0\r\n*0\r\n"
    ));
    let list = c.run("command list");
    assert!(
        list.starts_with("*18\r\n$3\r\nget\r\n$3\r\nset\r\n$3\r\ndel\r\n"),
        "{list}"
    );
    assert!(list.ends_with("$4\r\nauth\r\n$6\r\nconfig\r\n"), "{list}");
    assert_eq!(c.run("COMMAND DOCS get"), "*0\r\n");
    assert_eq!(Conn::new().resp3().run("COMMAND DOCS"), "%0\r\n");
    assert_eq!(
        c.run("COMMAND GETKEYS"),
        "-ERR unknown subcommand 'getkeys'. Try COMMAND, COMMAND COUNT, COMMAND LIST, \
         COMMAND INFO, COMMAND DOCS.\r\n"
    );
}

#[test]
fn the_table_answers_lookups_and_ordering() {
    assert_eq!(lookup(b"MgEt").map(|s| s.name), Some("mget"));
    assert!(lookup(b"incr").is_none());
    for name in ["set", "MSET", "ping", "Echo"] {
        assert!(runs_ahead_of_writes(name.as_bytes()), "{name}");
    }
    for name in ["get", "del", "exists", "mget", "strlen", "info", "quit"] {
        assert!(!runs_ahead_of_writes(name.as_bytes()), "{name}");
    }
}

/// `HELLO`'s map, as RESP2 (a flat array) or RESP3.
fn hello_reply(proto: u8) -> String {
    let fields = format!(
        "$6\r\nserver\r\n$3\r\nkvs\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n\
         :{proto}\r\n$2\r\nid\r\n:42\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n\
         $6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    );
    match proto {
        2 => format!("*14\r\n{fields}"),
        _ => format!("%7\r\n{fields}"),
    }
}

#[test]
fn hello_switches_the_protocol() {
    let mut c = Conn::new();
    assert_eq!(c.run("HELLO"), hello_reply(2));
    assert_eq!(c.run("HELLO 3"), hello_reply(3));
    assert_eq!(c.session.protocol, Protocol::Resp3);
    assert_eq!(c.run("GET k"), "_\r\n");
    assert_eq!(c.run("HELLO"), hello_reply(3));
    assert_eq!(c.run("HELLO 2"), hello_reply(2));
    assert_eq!(c.session.protocol, Protocol::Resp2);
    assert_eq!(
        c.run("HELLO 4"),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(c.session.protocol, Protocol::Resp2);
}

#[test]
fn hello_options() {
    let mut c = Conn::new();
    assert_eq!(c.run("HELLO 3 SETNAME app"), hello_reply(3));
    assert_eq!(c.session.name.as_deref(), Some(&b"app"[..]));
    // A refused token: WRONGPASS, and nothing about the connection changes.
    let mut c = Conn::new();
    assert_eq!(
        c.run("HELLO 3 AUTH user bad SETNAME x"),
        format!("-{WRONGPASS}\r\n")
    );
    assert_eq!(
        (
            c.session.protocol,
            c.session.name.as_ref(),
            c.session.token.as_ref()
        ),
        (Protocol::Resp2, None, None)
    );
    assert_eq!(c.run(&format!("HELLO 3 AUTH user {TOKEN}")), hello_reply(3));
    assert_eq!(c.session.token.as_deref(), Some(TOKEN));
    assert_eq!(
        c.run("HELLO 3 BOGUS"),
        "-ERR Syntax error in HELLO option 'BOGUS'\r\n"
    );
    assert_eq!(
        c.run("HELLO 3 AUTH user"),
        "-ERR Syntax error in HELLO option 'AUTH'\r\n"
    );
}

#[test]
fn auth() {
    let mut c = Conn::new();
    assert_eq!(
        c.run("AUTH wrong"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.session.token, None);
    assert_eq!(c.run(&format!("AUTH {TOKEN}")), "+OK\r\n");
    assert_eq!(c.session.token.as_deref(), Some(TOKEN));
    // AUTH user token: the user name is not used. A refused token keeps the old one.
    let mut c = Conn::new();
    assert_eq!(c.run(&format!("AUTH someone {TOKEN}")), "+OK\r\n");
    assert_eq!(c.run("AUTH someone wrong"), format!("-{WRONGPASS}\r\n"));
    assert_eq!(c.session.token.as_deref(), Some(TOKEN));
}

#[test]
fn client_subcommands() {
    let mut c = Conn::new();
    assert_eq!(c.run("CLIENT ID"), ":42\r\n");
    assert_eq!(c.run("CLIENT GETNAME"), "$-1\r\n");
    assert_eq!(Conn::new().resp3().run("CLIENT GETNAME"), "_\r\n");
    assert_eq!(c.run("CLIENT SETNAME app-1"), "+OK\r\n");
    assert_eq!(c.run("CLIENT GETNAME"), "$5\r\napp-1\r\n");
    assert_eq!(
        c.run("CLIENT INFO"),
        "$45\r\nid=42 name=app-1 db=0 cmd=client|info resp=2\n\r\n"
    );
    assert_eq!(c.run("CLIENT SETINFO lib-name redis-py"), "+OK\r\n");
    let (reply, _) = c.run_args(&[b"CLIENT", b"SETNAME", b"has space"]);
    assert_eq!(
        reply,
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(c.session.name.as_deref(), Some(&b"app-1"[..]));
    // An empty name clears it.
    let (reply, _) = c.run_args(&[b"CLIENT", b"SETNAME", b""]);
    assert_eq!(reply, "+OK\r\n");
    assert_eq!(c.session.name, None);
    assert_eq!(
        c.run("CLIENT ID 7"),
        "-ERR wrong number of arguments for 'client|id' command\r\n"
    );
    assert_eq!(
        c.run("CLIENT KILL x"),
        "-ERR unknown subcommand 'kill'. kvs answers CLIENT SETNAME, GETNAME, ID, SETINFO and \
         INFO.\r\n"
    );
    let mut c = Conn::new().resp3();
    c.run("HELLO 3");
    assert_eq!(
        c.run("CLIENT INFO"),
        "$40\r\nid=42 name= db=0 cmd=client|info resp=3\n\r\n"
    );
}

#[test]
fn info_and_dbsize() {
    let mut c = Conn::new();
    c.set("a", "1");
    c.set("bb", "22");
    assert_eq!(c.run("DBSIZE"), ":2\r\n");
    let keyspace = "# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n";
    assert_eq!(
        c.run("INFO keyspace"),
        format!("${}\r\n{keyspace}\r\n", keyspace.len())
    );
    let server = "# Server\r\nredis_version:7.0.0\r\nkvs_version:0.1.0\r\nkvs_frontend:resp\r\n\
                  redis_mode:standalone\r\ntcp_port:6379\r\nuptime_in_seconds:7\r\n\r\n";
    let clients = "# Clients\r\nconnected_clients:2\r\n\r\n";
    let memory = "# Memory\r\nkvs_data_bytes:6\r\n\r\n";
    let stats = "# Stats\r\ntotal_connections_received:5\r\ntotal_commands_processed:11\r\n\r\n";
    let all = format!("{server}{clients}{memory}{stats}{keyspace}");
    assert_eq!(c.run("INFO"), format!("${}\r\n{all}\r\n", all.len()));
    assert_eq!(
        c.run("INFO everything"),
        format!("${}\r\n{all}\r\n", all.len())
    );
    let two = format!("{clients}{stats}");
    assert_eq!(
        c.run("INFO STATS clients"),
        format!("${}\r\n{two}\r\n", two.len())
    );
    // Without store stats: no memory section, an empty keyspace, and no DBSIZE.
    c.backend.no_stats = true;
    assert_eq!(c.run("INFO keyspace memory"), "$12\r\n# Keyspace\r\n\r\n");
    assert_eq!(
        c.run("DBSIZE"),
        "-ERR DBSIZE needs a kvs host that reports store stats (plugin-api 1.3 or later)\r\n"
    );
}

#[test]
fn server_state_needs_an_authenticated_connection_where_the_host_says_so() {
    let mut c = Conn::with(Memory {
        require_auth: true,
        ..Memory::default()
    });
    for command in ["INFO", "DBSIZE", "CLIENT ID"] {
        assert_eq!(
            c.run(command),
            "-NOAUTH authentication required\r\n",
            "{command}"
        );
    }
    // What anyone may ask.
    assert_eq!(c.run("PING"), "+PONG\r\n");
    assert_eq!(c.run("COMMAND COUNT"), ":18\r\n");
    c.run(&format!("AUTH {TOKEN}"));
    assert_eq!(c.run("DBSIZE"), ":0\r\n");
    assert_eq!(c.run("CLIENT ID"), ":42\r\n");
}

#[test]
fn ping_echo_select_quit() {
    let mut c = Conn::new();
    assert_eq!(c.run("PING"), "+PONG\r\n");
    assert_eq!(c.run("ping hi"), "$2\r\nhi\r\n");
    assert_eq!(c.run("ECHO hello"), "$5\r\nhello\r\n");
    assert_eq!(c.run("SELECT 0"), "+OK\r\n");
    assert_eq!(
        c.run("SELECT 1"),
        "-ERR DB index is out of range (kvs has one database, 0)\r\n"
    );
    assert_eq!(c.run_flow("QUIT"), ("+OK\r\n".to_string(), Flow::Close));
}

#[test]
fn config_get_answers_what_tools_ask() {
    let mut c = Conn::new();
    assert_eq!(
        c.run("CONFIG GET save appendonly maxmemory"),
        "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"
    );
    assert_eq!(
        Conn::new().resp3().run("config get APPENDONLY"),
        "%1\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"
    );
    assert_eq!(c.run("CONFIG GET maxmemory"), "*0\r\n");
    assert_eq!(
        c.run("CONFIG SET save x"),
        "-ERR CONFIG SET is not supported by kvs: configure it in config.toml\r\n"
    );
}

#[test]
fn size_checks_give_the_hosts_messages() {
    let err = |r: Result<(), StoreError>| r.unwrap_err().reply();
    assert_eq!(err(check_sizes(b"", None, 4, 4)), "ERR key is empty");
    assert_eq!(
        err(check_sizes(b"abcde", None, 4, 4)),
        "ERR key is 5 bytes; the limit is 4 (limits.max_key_bytes)"
    );
    assert_eq!(
        err(check_sizes(b"k", Some(b"vvvvv"), 4, 4)),
        "ERR value is 5 bytes; the limit is 4 (limits.max_value_bytes)"
    );
    assert!(check_sizes(b"abcd", Some(b"vvvv"), 4, 4).is_ok());
    assert!(check_sizes(b"abcd", None, 4, 0).is_ok());
}
