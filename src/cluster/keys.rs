//! The key layout of a fleet in etcd, under `[cluster] key_prefix`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `members/<host>` | `Member` JSON: API URL, conductor group | the member's |
//! | `owners/<node uuid>` | the owner's host; its create revision is the node's fencing token | the owner's |
//! | `journals/<node uuid>` | the node's journal (`JournalRecord` JSON) while a run is unfinished | none |
//! | `records/<node uuid>` | the node's record (`NodeRecord` JSON) | none |
//!
//! Owners and members vanish with their lease; journals and records
//! outlive every daemon, which is what lets another one resume.

use serde::{Deserialize, Serialize};

/// A member's key value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub host: String,
    /// Where peers forward API requests for the nodes it owns.
    pub url: String,
    #[serde(default)]
    pub conductor_group: String,
}

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    Member(&'a str),
    Owner(&'a str),
    Journal(&'a str),
    Record(&'a str),
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn member(&self, host: &str) -> String {
        format!("{}members/{host}", self.prefix)
    }

    pub fn owner(&self, uuid: &str) -> String {
        format!("{}owners/{uuid}", self.prefix)
    }

    pub fn journal(&self, uuid: &str) -> String {
        format!("{}journals/{uuid}", self.prefix)
    }

    pub fn record(&self, uuid: &str) -> String {
        format!("{}records/{uuid}", self.prefix)
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }

    pub fn owners(&self) -> String {
        format!("{}owners/", self.prefix)
    }

    pub fn records(&self) -> String {
        format!("{}records/", self.prefix)
    }

    /// What `key` names; `None` for a key of another layout.
    pub fn parse<'a>(&self, key: &'a str) -> Option<Key<'a>> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let (kind, name) = rest.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        Some(match kind {
            "members" => Key::Member(name),
            "owners" => Key::Owner(name),
            "journals" => Key::Journal(name),
            "records" => Key::Record(name),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_to_what_they_name() {
        let keys = Keys::new("/rivet/");
        assert_eq!(keys.parse(&keys.owner("u1")), Some(Key::Owner("u1")));
        assert_eq!(keys.parse(&keys.member("h")), Some(Key::Member("h")));
        assert_eq!(keys.parse(&keys.record("u")), Some(Key::Record("u")));
        assert_eq!(keys.parse(&keys.journal("u")), Some(Key::Journal("u")));
        assert_eq!(keys.parse("/other/owners/u"), None);
        assert_eq!(keys.parse("/rivet/owners/"), None);
        assert_eq!(keys.parse("/rivet/owners/a/b"), None);
    }
}
