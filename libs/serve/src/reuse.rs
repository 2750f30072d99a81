//! Listening sockets a replacement can share: `SO_REUSEPORT`, but only with this
//! process (see `bind` in the crate root).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::BorrowedFd;

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

/// Whether a listening socket of this process is bound to `addr`: the older instance
/// of a frontend being replaced. Reads `/proc/self/fd`; any error means no.
pub(crate) fn held_by_this_process(addr: SocketAddr) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|fd| {
            // SAFETY: the descriptor is only queried (getsockname, getsockopt), never
            // closed or kept; if it was closed (or reused) meanwhile, the calls fail or
            // describe whatever it is now, which is only compared.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = SockRef::from(&fd);
            socket.is_listener().unwrap_or(false)
                && socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .is_some_and(|a| a == addr)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_listener_shares_only_with_this_process() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(held_by_this_process(addr));
        let second = bind_shared(addr).expect("a replacement binds beside the first");
        drop(first);
        assert!(held_by_this_process(addr), "the second still holds it");
        drop(second);
        assert!(!held_by_this_process(addr));
        // Not held here: the crate's `bind` probes with a plain bind, which a listener
        // of another process (even one with SO_REUSEPORT) makes fail.
        let other = bind_shared(addr).unwrap();
        assert!(std::net::TcpListener::bind(addr).is_err());
        drop(other);
    }
}
