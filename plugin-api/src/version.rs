//! The contract's version and the one rule that decides compatibility.

/// The contract's major version. Plug-ins and hosts with different majors never load
/// each other.
pub const API_MAJOR: u16 = 1;

/// The contract's minor version. A host loads plug-ins built against any minor up to
/// its own.
pub const API_MINOR: u16 = 8;

/// Why a plug-in's contract version is not acceptable to this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incompatibility {
    /// The majors differ: the contract changed incompatibly.
    OtherMajor {
        /// The plug-in's `(major, minor)`.
        plugin: (u16, u16),
        /// The host's `(major, minor)`.
        host: (u16, u16),
    },
    /// The plug-in was built against a newer minor than this host knows.
    NewerMinor {
        /// The plug-in's `(major, minor)`.
        plugin: (u16, u16),
        /// The host's `(major, minor)`.
        host: (u16, u16),
    },
}

impl std::fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incompatibility::OtherMajor { plugin, host } => write!(
                f,
                "built against plugin-api {}.{}, but this kvs speaks plugin-api {}.{}: \
                 rebuild the plug-in against plugin-api {}.x",
                plugin.0, plugin.1, host.0, host.1, host.0
            ),
            Incompatibility::NewerMinor { plugin, host } => write!(
                f,
                "built against plugin-api {}.{}, newer than this kvs's plugin-api {}.{}: \
                 upgrade kvs, or rebuild the plug-in against plugin-api {}.{}",
                plugin.0, plugin.1, host.0, host.1, host.0, host.1
            ),
        }
    }
}

/// The compatibility rule: majors equal, and the plug-in's minor <= the host's minor.
///
/// `host` is usually `(API_MAJOR, API_MINOR)`; it is a parameter so the rule itself can be
/// tested against versions that do not exist yet.
pub fn check_compatible(plugin: (u16, u16), host: (u16, u16)) -> Result<(), Incompatibility> {
    if plugin.0 != host.0 {
        Err(Incompatibility::OtherMajor { plugin, host })
    } else if plugin.1 > host.1 {
        Err(Incompatibility::NewerMinor { plugin, host })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule() {
        assert!(check_compatible((1, 0), (1, 0)).is_ok());
        assert!(check_compatible((1, 0), (1, 3)).is_ok());
        assert!(matches!(
            check_compatible((1, 4), (1, 3)),
            Err(Incompatibility::NewerMinor { .. })
        ));
        assert!(matches!(
            check_compatible((2, 0), (1, 3)),
            Err(Incompatibility::OtherMajor { .. })
        ));
        assert!(matches!(
            check_compatible((0, 9), (1, 0)),
            Err(Incompatibility::OtherMajor { .. })
        ));
        let msg = check_compatible((2, 0), (1, 0)).unwrap_err().to_string();
        assert!(
            msg.contains("2.0") && msg.contains("1.0") && msg.contains("rebuild"),
            "{msg}"
        );
    }
}
