//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` of the run, written by the guest init
//! into the guest's root before the workload starts: the run spec carries their contents
//! ([`crate::spec::Spec::etc_files`]), which the host computed by the container backend's rules
//! (docker's), so a VM and a container run with the same flags read the same files.
//!
//! They land in the overlay's writable layer (a tmpfs): the image's disk is never touched.
//! Each file replaces whatever the image had at that name (a file, a symlink such as
//! `resolv.conf -> ../run/systemd/resolve/stub-resolv.conf`); a directory of that name stays,
//! and so does an `/etc` that is a symlink. `/etc` keeps its times, as a bind of the files
//! would leave them.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `files` (`(name, content)`, names checked by the spec decoder) into `root`/etc.
pub fn write_etc_files(root: &Path, files: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let etc = root.join("etc");
    let before = match fs::symlink_metadata(&etc) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => return Ok(()),
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(&etc).map_err(|e| format!("cannot create /etc: {e}"))?;
            None
        }
        Err(e) => return Err(format!("cannot stat /etc: {e}")),
    };
    for (name, content) in files {
        let path = etc.join(std::ffi::OsStr::from_bytes(name));
        let shown = String::from_utf8_lossy(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                fs::remove_file(&path).map_err(|e| format!("cannot replace /etc/{shown}: {e}"))?
            }
            Err(_) => {}
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut f| f.write_all(content))
            .map_err(|e| format!("cannot write /etc/{shown}: {e}"))?;
    }
    if let Some(m) = before {
        let times = fs::FileTimes::new()
            .set_accessed(m.accessed().map_err(|e| e.to_string())?)
            .set_modified(m.modified().map_err(|e| e.to_string())?);
        fs::File::open(&etc)
            .and_then(|d| d.set_times(times))
            .map_err(|e| format!("cannot keep the times of /etc: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("isol-etc-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn files() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"hostname".to_vec(), b"web\n".to_vec()),
            (
                b"hosts".to_vec(),
                b"127.0.0.1\tlocalhost\n10.88.0.7\tweb\n".to_vec(),
            ),
            (b"resolv.conf".to_vec(), b"nameserver 10.0.0.2\n".to_vec()),
        ]
    }

    #[test]
    fn files_replace_what_the_image_had_and_etc_keeps_its_times() {
        let root = tmp("replace");
        let etc = root.join("etc");
        fs::create_dir(&etc).unwrap();
        fs::write(etc.join("hosts"), "old").unwrap();
        // A symlink pointing outside: replaced, its target untouched.
        fs::write(root.join("target"), "keep").unwrap();
        std::os::unix::fs::symlink("../target", etc.join("resolv.conf")).unwrap();
        let old = fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH);
        fs::File::open(&etc).unwrap().set_times(old).unwrap();
        write_etc_files(&root, &files()).unwrap();
        for (name, content) in files() {
            let p = etc.join(String::from_utf8(name).unwrap());
            assert_eq!(fs::read(&p).unwrap(), content);
            let m = fs::symlink_metadata(&p).unwrap();
            assert!(m.is_file());
            assert_eq!(m.permissions().mode() & 0o777, 0o644);
        }
        assert_eq!(fs::read_to_string(root.join("target")).unwrap(), "keep");
        let m = fs::metadata(&etc).unwrap().modified().unwrap();
        assert_eq!(m, std::time::UNIX_EPOCH, "/etc keeps its mtime");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_etc_is_made_and_a_directory_or_symlinked_etc_is_left() {
        let root = tmp("missing");
        write_etc_files(&root, &files()).unwrap();
        assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"web\n");
        // A directory named like a file stays.
        fs::remove_file(root.join("etc/hosts")).unwrap();
        fs::create_dir(root.join("etc/hosts")).unwrap();
        write_etc_files(&root, &files()).unwrap();
        assert!(root.join("etc/hosts").is_dir());
        // An /etc that is a symlink is not followed.
        let other = tmp("symlinked");
        fs::create_dir(other.join("real")).unwrap();
        std::os::unix::fs::symlink("real", other.join("etc")).unwrap();
        write_etc_files(&other, &files()).unwrap();
        assert!(fs::read_dir(other.join("real")).unwrap().next().is_none());
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&other).unwrap();
    }
}
