//! The identity the workload runs as (`--user`, or the image's `User`): `uid[:gid]` or
//! `name[:group]`, names resolved in the container's own /etc/passwd and /etc/group.

use std::fs;

use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

/// Why a user spec cannot be resolved or switched to.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("Invalid user {spec:?}: use uid[:gid] or name[:group]")]
    Syntax { spec: String },
    #[error(
        "Invalid user {spec:?}: uids and gids must be in range 0-{max}; give ids in that range",
        max = MAX_ID
    )]
    OutOfRange { spec: String },
    #[error("Bad uid for user {user} in the image's /etc/passwd")]
    BadUid { user: String },
    #[error("User {user:?} not found in the image's /etc/passwd; use a numeric uid")]
    UnknownUser { user: String },
    #[error("Group {group:?} not found in the image's /etc/group; use a numeric gid")]
    UnknownGroup { group: String },
    #[error("Cannot set supplementary groups: {0}")]
    Groups(#[source] nix::Error),
    #[error("Cannot switch to gid {gid}: {source}")]
    Gid { gid: u32, source: nix::Error },
    #[error("Cannot switch to uid {uid}: {source}")]
    Uid { uid: u32, source: nix::Error },
}

/// Resolved ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Ids {
    /// Switches to these ids. Groups first: once the uid is not root, they cannot change.
    pub fn apply(&self) -> Result<(), UserError> {
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        // A user namespace with setgroups denied cannot change supplementary groups.
        if let Err(e) = setgroups(&groups)
            && e != nix::errno::Errno::EPERM
        {
            return Err(UserError::Groups(e));
        }
        let gid = Gid::from_raw(self.gid);
        setresgid(gid, gid, gid).map_err(|source| UserError::Gid {
            gid: self.gid,
            source,
        })?;
        let uid = Uid::from_raw(self.uid);
        setresuid(uid, uid, uid).map_err(|source| UserError::Uid {
            uid: self.uid,
            source,
        })
    }
}

/// The largest uid or gid a container may run as, as runc: ids above it are negative as a
/// signed int, and `-1` (4294967295) means "leave unchanged" to setresuid, i.e. stay root.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Drops to the capabilities `keep` (a [`crate::security::capabilities::mask`]) and switches to
/// `ids`, in the order that lets both happen: changing ids needs CAP_SETUID and CAP_SETGID,
/// which `keep` may lack. The bounding set becomes `keep` first; CAP_SETUID, CAP_SETGID (and
/// CAP_SETPCAP, to drop them after) stay permitted and effective until the switch. A non-root
/// uid loses every permitted and effective capability at it and keeps `keep` as its bounding
/// set (what docker sends for `--user`: what a setuid binary could regain), root drops to
/// `keep` after it.
///
/// With `ambient` (an OCI config's ambient set) and a non-root uid, the permitted set is kept
/// across the switch (`PR_SET_KEEPCAPS`, which the next exec clears) so that the caller can
/// raise `ambient`: the only capabilities a non-root process holds after its exec.
pub(crate) fn switch_with_capabilities(
    keep: u64,
    ambient: u64,
    ids: &Ids,
) -> Result<(), crate::error::SetupError> {
    use crate::security::capabilities::{drop_bounding_holding, drop_to, mask};
    use caps::Capability::{CAP_SETGID, CAP_SETPCAP, CAP_SETUID};
    drop_bounding_holding(keep, mask(&[CAP_SETUID, CAP_SETGID, CAP_SETPCAP]))?;
    if ids.uid != 0 && ambient != 0 {
        // SAFETY: PR_SET_KEEPCAPS takes an integer and changes only this thread's flag.
        let r = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        nix::errno::Errno::result(r).map_err(|e| {
            crate::error::SetupError::process(
                "Cannot keep the capabilities across the uid switch",
                e,
            )
        })?;
    }
    ids.apply()?;
    if ids.uid == 0 {
        drop_to(keep)?;
    }
    Ok(())
}

/// Checks the numeric parts of a user spec (`uid[:gid]`, `name[:group]`) before anything runs:
/// a number outside 0–[`MAX_ID`] is refused.
pub fn check_spec(spec: &str) -> Result<(), UserError> {
    for part in spec.split(':') {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            check_id(part.parse::<u64>().unwrap_or(u64::MAX), spec)?;
        }
    }
    Ok(())
}

fn check_id(id: u64, spec: &str) -> Result<u32, UserError> {
    if id > u64::from(MAX_ID) {
        return Err(UserError::OutOfRange { spec: spec.into() });
    }
    Ok(id as u32)
}

/// Resolves a user spec against /etc/passwd and /etc/group of the current root.
pub fn resolve(spec: &str) -> Result<Ids, UserError> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    resolve_in(spec, &passwd, &group)
}

fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(UserError::Syntax { spec: spec.into() });
    }
    check_spec(spec)?;
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user));
    let (uid, name, primary_gid) = match (user.parse::<u32>(), &entry) {
        (Ok(uid), Some(f)) => (uid, Some(f[0]), f[3].parse::<u32>().ok()),
        (Ok(uid), None) => (uid, None, None),
        (Err(_), Some(f)) => (
            f[2].parse::<u32>()
                .map_err(|_| UserError::BadUid { user: user.into() })?,
            Some(f[0]),
            f[3].parse::<u32>().ok(),
        ),
        (Err(_), None) => {
            return Err(UserError::UnknownUser { user: user.into() });
        }
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::UnknownGroup { group: g.into() })?,
        },
        None => primary_gid.unwrap_or(0),
    };
    // Supplementary groups: every group listing the user by name.
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    // Names may map to ids out of range too (an image's /etc/passwd is the image's to write).
    check_id(u64::from(uid), spec)?;
    check_id(u64::from(gid), spec)?;
    groups.retain(|&g| g <= MAX_ID);
    Ok(Ids { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\n";

    #[test]
    fn names_and_numbers_resolve() {
        let a = resolve_in("alice", PASSWD, GROUP).unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups.clone()),
            (1000, 1000, vec![1000, 10])
        );
        let n = resolve_in("1234:5", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid), (1234, 5));
        let g = resolve_in("alice:wheel", PASSWD, GROUP).unwrap();
        assert_eq!(g.gid, 10);
        let r = resolve_in("0", PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        assert!(
            resolve_in("bob", PASSWD, GROUP)
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        assert!(
            resolve_in("alice:staff", PASSWD, GROUP)
                .unwrap_err()
                .to_string()
                .contains("Group")
        );
        assert!(resolve_in(":1", PASSWD, GROUP).is_err());
    }

    #[test]
    fn ids_out_of_range_are_refused() {
        // 4294967295 is -1 to setresuid: "unchanged", i.e. root.
        for spec in [
            "4294967295",
            "4294967295:1000",
            "0:4294967295",
            "2147483648",
            "99999999999",
        ] {
            let e = resolve_in(spec, PASSWD, GROUP).unwrap_err().to_string();
            assert!(e.contains("must be in range 0-2147483647"), "{spec}: {e}");
            assert!(check_spec(spec).is_err(), "{spec}");
        }
        let big = "big:x:4294967295:0::/:/bin/sh\n";
        assert!(resolve_in("big", big, GROUP).is_err());
        assert_eq!(
            resolve_in("2147483647", PASSWD, GROUP).unwrap().uid,
            2147483647
        );
        assert!(check_spec("alice:wheel").is_ok());
    }
}
