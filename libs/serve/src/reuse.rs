//! Listening sockets a replacement can share: `SO_REUSEPORT`, but only with this
//! process (see `bind` in the crate root).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, OwnedFd};

use socket2::{Domain, SockRef, Socket, Type};

/// How many connections the kernel queues before `accept`, as nginx and Redis default.
const BACKLOG: i32 = 511;

/// A listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` set.
pub(crate) fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Whether `fd` is a listening socket bound to `addr`.
fn listens_on(fd: BorrowedFd<'_>, addr: SocketAddr) -> bool {
    let socket = SockRef::from(&fd);
    socket.is_listener().unwrap_or(false)
        && socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == addr)
}

/// A listening socket of this process bound to `addr` — the older instance of a
/// frontend being replaced — as a descriptor of its own (a `dup`: the same socket, the
/// same queue of connections). Reads `/proc/self/fd`; any error means none.
///
/// Sharing the socket itself, rather than binding a second one beside it with
/// `SO_REUSEPORT`, is what makes a replacement lose no connection: the kernel spreads
/// new connections over `SO_REUSEPORT` sockets, and those queued on one that closes
/// are reset (unless `net.ipv4.tcp_migrate_req` is set); a shared socket stays open
/// while either instance holds it.
pub(crate) fn listener_of_this_process(addr: SocketAddr) -> Option<TcpListener> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find_map(|fd| {
            // SAFETY: the descriptor is only queried (getsockname, getsockopt) and
            // duplicated, never closed; if it was closed (or reused) meanwhile, the calls
            // fail or describe whatever it is now, and the duplicate is checked again.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            if !listens_on(fd, addr) {
                return None;
            }
            let own: OwnedFd = fd.try_clone_to_owned().ok()?;
            use std::os::fd::AsFd;
            listens_on(own.as_fd(), addr).then(|| TcpListener::from(own))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_listener_shares_the_socket_and_only_with_this_process() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listener_of_this_process(addr).expect("the first is found");
        // A connection queued before the first closes is still there for the second:
        // it is the same socket.
        let client = std::net::TcpStream::connect(addr).unwrap();
        drop(first);
        let (accepted, _) = second.accept().expect("the queued connection survived");
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        assert!(
            listener_of_this_process(addr).is_some(),
            "the second still holds it"
        );
        drop(second);
        assert!(listener_of_this_process(addr).is_none());
        // Not held here: the crate's `bind` probes with a plain bind, which a listener
        // of another process (even one with SO_REUSEPORT) makes fail.
        let other = bind_shared(addr).unwrap();
        assert!(std::net::TcpListener::bind(addr).is_err());
        drop(other);
    }
}
