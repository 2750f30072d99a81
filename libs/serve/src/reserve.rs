//! The descriptor reserve: a frontend's listener closes at once a connection whose
//! descriptor is among the last ones the process may open, so that when clients have
//! taken every other descriptor the host's admin listener (`/readyz`, `/metrics`), the
//! logger and the plug-ins' own files still get one.
//!
//! Descriptors are handed out lowest-free-first, so an accepted connection's number
//! says how many are open: no counter has to be shared between plug-in libraries (each
//! links its own copy of this crate).

use std::os::fd::RawFd;

/// Descriptors left to the host at most: a quarter of the limit when that is smaller.
pub const DESCRIPTOR_RESERVE: u64 = 256;

/// Which accepted connections a listener keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reserve {
    /// The first descriptor number a frontend's connection may not have (`None`: no
    /// limit to keep a reserve under, or the listener is the host's own).
    ceiling: Option<u64>,
}

impl Reserve {
    /// For a frontend (`keep` true): under the process's open-file soft limit as it is
    /// now (kvs raises it to the hard limit before any frontend starts).
    pub(crate) fn new(keep: bool) -> Reserve {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed.
        let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
            && limit.rlim_cur != libc::RLIM_INFINITY;
        let ceiling = (keep && known).then(|| {
            let soft = limit.rlim_cur;
            soft - DESCRIPTOR_RESERVE.min(soft / 4)
        });
        Reserve { ceiling }
    }

    /// Whether a connection with descriptor `fd` may stay open.
    pub(crate) fn admits(&self, fd: RawFd) -> bool {
        self.ceiling.is_none_or(|ceiling| (fd as u64) < ceiling)
    }
}

/// Why a frontend closes new connections while the reserve is reached.
pub(crate) fn refusal(table: &str) -> String {
    format!(
        "{table}: the process is down to its last open-file descriptors, which are kept for \
         the admin listener and the logger; closing new connections until some close (raise \
         the open-file limit, LimitNOFILE= under systemd, or lower max_connections)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_descriptors_are_kept_for_the_host() {
        let frontend = Reserve {
            ceiling: Some(1000 - 250),
        };
        assert!(frontend.admits(3));
        assert!(frontend.admits(749));
        assert!(!frontend.admits(750));
        assert!(Reserve::new(false).admits(RawFd::MAX));
        // Whatever this process's limit is, a low descriptor is always admitted.
        assert!(Reserve::new(true).admits(3));
    }
}
