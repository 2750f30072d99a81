//! Arity, unknown and unsupported commands, and `COMMAND`.

use super::*;

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
        "-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n"
    );
    assert_eq!(
        c.run("NOPE"),
        "-ERR unknown command 'NOPE', with args beginning with: \r\n"
    );
    assert_eq!(
        c.run("SETRANGE k 0 v"),
        "-ERR 'setrange' is not supported by kvs: kvs's atomic operations are SET's \
         options, SETNX, SETEX, GETSET, GETDEL, GETEX, INCR/DECR, INCRBYFLOAT, APPEND and \
         the EXPIRE family; this one is not among them\r\n"
    );
    assert_eq!(
        c.run("KEYS *"),
        "-ERR 'keys' is not supported by kvs: kvs does not list or drop keys in bulk\r\n"
    );
    assert_eq!(
        c.run("MULTI"),
        "-ERR 'multi' is not supported by kvs: kvs has no transactions or scripts\r\n"
    );
    // A wrong argument count gets Redis's arity error first, as clients expect.
    for (command, name) in [
        ("INCR", "incr"),
        ("TTL", "ttl"),
        ("MULTI x", "multi"),
        ("keys", "keys"),
    ] {
        assert_eq!(
            c.run(command),
            format!("-ERR wrong number of arguments for '{name}' command\r\n")
        );
    }
    // Redis cuts the arguments it quotes at 128 bytes, and the name too.
    let long = "x".repeat(300);
    assert_eq!(
        c.run(&format!("FOO {long} y")),
        format!(
            "-ERR unknown command 'FOO', with args beginning with: '{}' \r\n",
            "x".repeat(128)
        )
    );
    assert_eq!(
        c.run(&format!("{long} a")),
        format!(
            "-ERR unknown command '{}', with args beginning with: 'a' \r\n",
            "x".repeat(128)
        )
    );
    // An empty command is no command: nothing is answered or counted.
    let before = c.session.commands;
    assert_eq!(c.run_args(&[]), (String::new(), Flow::Continue));
    assert_eq!(c.session.commands, before);
}

#[test]
fn command_describes_the_table() {
    let mut c = Conn::new();
    assert_eq!(TABLE.len(), 40);
    assert_eq!(c.run("COMMAND COUNT"), ":40\r\n");
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
    assert!(all.starts_with(&format!("*40\r\n{get}")), "{all}");
    assert!(all.ends_with(
        "*10\r\n$6\r\nconfig\r\n:-2\r\n*3\r\n+admin\r\n+loading\r\n+stale\r\n:0\r\n:0\r\n\
         :0\r\n*0\r\n*0\r\n*0\r\n*0\r\n"
    ));
    let list = c.run("command list");
    assert!(
        list.starts_with("*40\r\n$3\r\nget\r\n$3\r\nset\r\n$3\r\ndel\r\n"),
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
    assert!(lookup(b"setrange").is_none());
    for name in ["set", "MSET", "ping", "Echo", "incr", "SETNX", "expire"] {
        assert!(runs_ahead_of_writes(name.as_bytes()), "{name}");
    }
    for name in [
        "get", "del", "exists", "mget", "strlen", "info", "quit", "ttl",
    ] {
        assert!(!runs_ahead_of_writes(name.as_bytes()), "{name}");
    }
}
