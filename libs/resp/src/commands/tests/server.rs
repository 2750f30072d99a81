//! HELLO, AUTH, CLIENT, INFO, DBSIZE, PING, ECHO, SELECT, QUIT, CONFIG GET.

use super::*;
use crate::reply::Protocol;

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
    // Redis's checks: the version is an integer, the name one CLIENT SETNAME takes.
    for (command, error) in [
        (
            "HELLO abc",
            "ERR Protocol version is not an integer or out of range",
        ),
        (
            "HELLO 03",
            "ERR Protocol version is not an integer or out of range",
        ),
        ("HELLO 4", "NOPROTO unsupported protocol version"),
        ("HELLO 1", "NOPROTO unsupported protocol version"),
    ] {
        assert_eq!(c.run(command), format!("-{error}\r\n"), "{command}");
    }
    let mut c = Conn::new();
    let (reply, _) = c.run_args(&[b"HELLO", b"3", b"SETNAME", b"a b"]);
    assert_eq!(
        reply,
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        (c.session.protocol, c.session.name),
        (Protocol::Resp2, None)
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
        "=44\r\ntxt:id=42 name= db=0 cmd=client|info resp=3\n\r\n"
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
    // RESP3: a verbatim string, as Redis answers INFO.
    assert_eq!(
        Conn::new().resp3().run("INFO keyspace"),
        "=16\r\ntxt:# Keyspace\r\n\r\n"
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
    assert_eq!(c.run("COMMAND COUNT"), ":40\r\n");
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
    assert_eq!(c.run("SELECT 1"), "-ERR DB index is out of range\r\n");
    for bad in ["x", "00", "-0", "1.0"] {
        assert_eq!(
            c.run(&format!("SELECT {bad}")),
            "-ERR value is not an integer or out of range\r\n"
        );
    }
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
        "%1\r\n$10\r\nAPPENDONLY\r\n$3\r\nyes\r\n"
    );
    assert_eq!(c.run("CONFIG GET maxmemory"), "*0\r\n");
    assert_eq!(
        c.run("CONFIG GET"),
        "-ERR wrong number of arguments for 'config|get' command\r\n"
    );
    assert_eq!(
        c.run("CONFIG SET save x"),
        "-ERR CONFIG SET is not supported by kvs: configure it in config.toml\r\n"
    );
}
