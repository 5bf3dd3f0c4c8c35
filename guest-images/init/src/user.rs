//! The workload's identity inside the guest: the spec's `uid[:gid]` or `name[:group]`,
//! names looked up in the guest root's /etc/passwd and /etc/group — the image's own
//! files, as the container runtime reads them in the container's root. The rules are the
//! container runtime's (`isol_container::user`), so that `-u` means the same on both
//! backends:
//!
//! * the user is a name or a uid; a uid need not be in /etc/passwd, but when it is, its
//!   entry gives the primary group and the name for the supplementary groups;
//! * the group, when given, is a gid or a name from /etc/group; otherwise the primary
//!   group of the passwd entry, else 0;
//! * the supplementary groups are the primary gid and every group listing the user's
//!   name among its members;
//! * ids above `i32::MAX` are refused (`-1` means "unchanged" to `setresuid`).

use std::fmt;

/// The largest uid or gid a workload may run as (the container runtime's `MAX_ID`).
pub const MAX_ID: u32 = i32::MAX as u32;

/// Resolved ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// Real, effective and saved uid.
    pub uid: u32,
    /// Real, effective and saved gid.
    pub gid: u32,
    /// Supplementary groups, the gid first.
    pub groups: Vec<u32>,
}

/// Why a user spec does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    /// No user part.
    Syntax(String),
    /// An id above [`MAX_ID`].
    OutOfRange(String),
    /// The passwd entry's uid is not a number.
    BadUid(String),
    /// No such user name.
    UnknownUser(String),
    /// No such group name.
    UnknownGroup(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Syntax(s) => write!(f, "Invalid user {s:?}: use uid[:gid] or name[:group]"),
            UserError::OutOfRange(s) => write!(
                f,
                "Invalid user {s:?}: uids and gids must be in range 0-{MAX_ID}; give ids in that range"
            ),
            UserError::BadUid(u) => write!(
                f,
                "Bad uid for user {u} in the image's /etc/passwd; use a numeric uid"
            ),
            UserError::UnknownUser(u) => write!(
                f,
                "User {u:?} not found in the image's /etc/passwd; use a numeric uid"
            ),
            UserError::UnknownGroup(g) => write!(
                f,
                "Group {g:?} not found in the image's /etc/group; use a numeric gid"
            ),
        }
    }
}

impl std::error::Error for UserError {}

/// The `:`-separated fields of each line of a passwd or group file.
fn records(file: &str) -> impl Iterator<Item = Vec<&str>> {
    file.lines().map(|l| l.split(':').collect())
}

/// `id` as a uid or gid, refused above [`MAX_ID`].
fn in_range(id: u64, spec: &str) -> Result<u32, UserError> {
    u32::try_from(id)
        .ok()
        .filter(|&id| id <= MAX_ID)
        .ok_or_else(|| UserError::OutOfRange(spec.to_owned()))
}

/// Resolves `spec` against the text of /etc/passwd and /etc/group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let (who, grp) = spec
        .split_once(':')
        .map_or((spec, None), |(u, g)| (u, Some(g)));
    if who.is_empty() {
        return Err(UserError::Syntax(spec.to_owned()));
    }
    // Every number the user typed is checked first, whatever the files say.
    for part in spec.split(':') {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            in_range(part.parse().unwrap_or(u64::MAX), spec)?;
        }
    }
    let entry = records(passwd).find(|f| f.len() >= 4 && (f[0] == who || f[2] == who));
    let number = who.parse::<u32>().ok();
    let uid = match (number, &entry) {
        (Some(uid), _) => uid,
        (None, Some(f)) => f[2]
            .parse()
            .map_err(|_| UserError::BadUid(who.to_owned()))?,
        (None, None) => return Err(UserError::UnknownUser(who.to_owned())),
    };
    let name = entry.as_ref().map(|f| f[0]);
    let gid = match grp {
        None => entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => records(group)
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::UnknownGroup(g.to_owned()))?,
        },
    };
    let mut groups = vec![gid];
    if let Some(name) = name {
        let member_of = records(group)
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse::<u32>().ok());
        for g in member_of {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    // An image's /etc/passwd may hold ids out of range too.
    let uid = in_range(u64::from(uid), spec)?;
    let gid = in_range(u64::from(gid), spec)?;
    groups.retain(|&g| g <= MAX_ID);
    Ok(Ids { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As in the busybox image, plus a user in two groups.
    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        alice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nalice:x:1000:\nwheel:x:10:alice,bob\n";

    fn ids(spec: &str) -> (u32, u32, Vec<u32>) {
        let i = resolve(spec, PASSWD, GROUP).unwrap();
        (i.uid, i.gid, i.groups)
    }

    #[test]
    fn names_and_numbers_resolve_as_in_a_container() {
        assert_eq!(ids("alice"), (1000, 1000, vec![1000, 10]));
        // A uid found in passwd takes its entry's group and memberships.
        assert_eq!(ids("1000"), (1000, 1000, vec![1000, 10]));
        // One that is not runs with gid 0, as in docker.
        assert_eq!(ids("1234"), (1234, 0, vec![0]));
        assert_eq!(ids("1234:5"), (1234, 5, vec![5]));
        assert_eq!(ids("alice:wheel"), (1000, 10, vec![10]));
        assert_eq!(ids("0"), (0, 0, vec![0]));
        assert_eq!(ids("nobody"), (65534, 65534, vec![65534]));
        assert_eq!(ids("nobody:wheel"), (65534, 10, vec![10]));
        assert_eq!(
            resolve("1000", "", "").unwrap(),
            Ids {
                uid: 1000,
                gid: 0,
                groups: vec![0]
            }
        );
    }

    #[test]
    fn unknown_names_and_bad_specs_are_clear_errors() {
        let e = |s: &str| resolve(s, PASSWD, GROUP).unwrap_err();
        assert_eq!(e("bob"), UserError::UnknownUser("bob".into()));
        assert_eq!(e("alice:staff"), UserError::UnknownGroup("staff".into()));
        assert_eq!(e(":1"), UserError::Syntax(":1".into()));
        assert_eq!(
            resolve("eve", "eve:x:abc:0::/:/bin/sh\n", GROUP),
            Err(UserError::BadUid("eve".into()))
        );
        for err in [e("bob"), e("alice:staff"), e(":1")] {
            let m = err.to_string();
            assert!(
                m.starts_with(char::is_uppercase) && !m.contains('\n'),
                "{m}"
            );
        }
    }

    #[test]
    fn ids_out_of_range_are_refused() {
        // (spec, passwd, in range): 4294967295 is -1 to setresuid ("unchanged": root).
        let big = "big:x:4294967295:0::/:/bin/sh\n";
        let cases = [
            ("2147483647", PASSWD, true),
            ("2147483648", PASSWD, false),
            ("4294967295", PASSWD, false),
            ("4294967295:1000", PASSWD, false),
            ("0:4294967295", PASSWD, false),
            ("99999999999", PASSWD, false),
            ("big", big, false),
        ];
        for (spec, passwd, ok) in cases {
            match resolve(spec, passwd, GROUP) {
                Ok(ids) => assert!(ok && ids.uid == 2147483647, "{spec}: {ids:?}"),
                Err(e) => assert!(
                    !ok && e == UserError::OutOfRange(spec.into()),
                    "{spec}: {e}"
                ),
            }
        }
        assert!(
            UserError::OutOfRange("x".into())
                .to_string()
                .contains("must be in range 0-2147483647")
        );
    }
}
