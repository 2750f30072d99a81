//! Roles and what they grant: read or write on key prefixes, like etcd's RBAC.

use std::collections::HashMap;

use anyhow::{Result, bail};

use super::AuthConfig;
use crate::caller::Action;
pub use kvs_config::RoleConfig;

/// Prefixes granted for reading and for writing. An empty prefix is every key.
#[derive(Debug, Default, Clone)]
struct Grants {
    read: Vec<Vec<u8>>,
    write: Vec<Vec<u8>>,
}

impl Grants {
    fn add(&mut self, role: &Grants) {
        self.read.extend(role.read.iter().cloned());
        self.write.extend(role.write.iter().cloned());
    }

    fn allows(&self, op: Action, key: &[u8]) -> bool {
        let prefixes = match op {
            Action::Get => &self.read,
            Action::Put | Action::Delete => &self.write,
        };
        prefixes.iter().any(|p| key.starts_with(p))
    }
}

/// Who may do what, resolved from `[auth]`: each principal's grants are the union of
/// its roles'.
#[derive(Debug)]
pub struct Rules {
    anonymous: Grants,
    principals: HashMap<String, Grants>,
    /// Principals `[auth.principals]` gives at least one role.
    with_roles: std::collections::HashSet<String>,
}

fn prefix(role: &str, text: &str) -> Result<Vec<u8>> {
    match text {
        "*" => Ok(Vec::new()),
        "" => bail!("role {role:?} grants the empty prefix \"\"; write \"*\" for every key"),
        _ => Ok(percent_encoding::percent_decode_str(text).collect()),
    }
}

impl Rules {
    /// Resolves roles and principals; an unknown role name is an error naming it.
    pub fn from_config(config: &AuthConfig) -> Result<Rules> {
        let mut roles = HashMap::new();
        for (name, role) in &config.roles {
            let grants = Grants {
                read: role
                    .read
                    .iter()
                    .map(|p| prefix(name, p))
                    .collect::<Result<_>>()?,
                write: role
                    .write
                    .iter()
                    .map(|p| prefix(name, p))
                    .collect::<Result<_>>()?,
            };
            roles.insert(name.as_str(), grants);
        }
        let grants_of = |who: &str, names: &[String]| -> Result<Grants> {
            let mut grants = Grants::default();
            for name in names {
                match roles.get(name.as_str()) {
                    Some(role) => grants.add(role),
                    None => {
                        bail!("{who} has role {name:?}, which no [auth.roles.{name}] table defines")
                    }
                }
            }
            Ok(grants)
        };
        let anonymous = grants_of("anonymous", &config.anonymous)?;
        let principals = config
            .principals
            .iter()
            .map(|(who, names)| {
                Ok((
                    who.clone(),
                    grants_of(&format!("principal {who:?}"), names)?,
                ))
            })
            .collect::<Result<_>>()?;
        let with_roles = config
            .principals
            .iter()
            .filter(|(_, roles)| !roles.is_empty())
            .map(|(who, _)| who.clone())
            .collect();
        Ok(Rules {
            anonymous,
            principals,
            with_roles,
        })
    }

    /// Whether `[auth.principals]` gives `principal` at least one role (whatever the
    /// role grants): what the admin endpoints ask of a caller.
    pub fn has_role(&self, principal: &str) -> bool {
        self.with_roles.contains(principal)
    }

    /// Whether `principal` (`None`: anonymous) may do `op` on `key`. Everyone has the
    /// anonymous grants; a principal not listed has only those.
    pub fn allows(&self, principal: Option<&str>, op: Action, key: &[u8]) -> bool {
        self.anonymous.allows(op, key)
            || principal
                .and_then(|p| self.principals.get(p))
                .is_some_and(|g| g.allows(op, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Result<Rules> {
        let config: AuthConfig = toml::from_str(text)?;
        Rules::from_config(&config)
    }

    #[test]
    fn prefixes_are_bytes_and_star_is_everything() {
        let r = rules(
            r#"
            anonymous = ["public"]
            [roles.public]
            read = ["pub/"]
            [roles.reader]
            read = ["app/", "%FF"]
            [roles.admin]
            read = ["*"]
            write = ["*"]
            [principals]
            alice = ["reader"]
            root = ["admin", "reader"]
            "#,
        )
        .unwrap();
        assert!(r.allows(Some("alice"), Action::Get, b"app/x"));
        assert!(r.allows(Some("alice"), Action::Get, b"\xffbinary"));
        assert!(!r.allows(Some("alice"), Action::Put, b"app/x"));
        assert!(!r.allows(Some("alice"), Action::Get, b"other/x"));
        assert!(!r.allows(Some("alice"), Action::Get, b"app"));
        assert!(
            r.allows(Some("alice"), Action::Get, b"pub/x"),
            "anonymous grants are everyone's"
        );
        assert!(r.allows(None, Action::Get, b"pub/x"));
        assert!(!r.allows(None, Action::Delete, b"pub/x"));
        assert!(!r.allows(Some("mallory"), Action::Get, b"app/x"));
        assert!(r.allows(Some("root"), Action::Delete, b"anything"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = rules("[principals]\nalice = [\"raeder\"]").unwrap_err();
        assert!(e.to_string().contains("raeder"), "{e}");
        let e = rules("[roles.r]\nread = [\"\"]").unwrap_err();
        assert!(e.to_string().contains("\"*\""), "{e}");
        let e = rules("[roles.r]\nreed = [\"a\"]").unwrap_err();
        assert!(e.to_string().contains("reed"), "{e}");
    }
}
