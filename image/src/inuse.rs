//! Which images running containers and VMs use, so that no image is deleted from under one.
//!
//! Every run records its image in `<root>/in-use/<id>` (one line: `<manifest digest>
//! <backend>`) and holds an exclusive `flock` on that file for as long as it runs; a VM's
//! isol keeps the file open across its exec into `isol-vmm`. A file with content that nobody
//! holds locked is a dead run's (a SIGKILLed isol leaves its file behind) and is deleted when
//! found: by `isol image rm|import`, and by [`Store::open`]'s sweep. Runs make their marks
//! without the store lock (see [`Store::mark_in_use`] for why that is safe); marks are read
//! under it.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

use crate::{Image, ImageError, Store, fsutil};

/// A running container or VM using an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// The run's id.
    pub id: String,
    /// What runs it ("container" or "kvm").
    pub backend: String,
}

/// A run's mark on its image: kept while this value (or, after
/// [`InUse::keep_across_exec`], the process) lives; removed on drop.
#[derive(Debug)]
pub struct InUse {
    path: PathBuf,
    file: Flock<File>,
}

impl InUse {
    /// The mark's file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Lets the mark's file (and its lock) survive an `exec` of this process, so the program it
    /// becomes holds the mark until it exits.
    pub fn keep_across_exec(&self) -> Result<(), ImageError> {
        // SAFETY: F_SETFD on an fd this value owns; it only clears close-on-exec.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(ImageError::io("keep open", &self.path)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        // Still locked here, so no reader takes the file for a dead run's meanwhile.
        let _ = fs::remove_file(&self.path);
    }
}

impl Store {
    fn in_use_dir(&self) -> PathBuf {
        self.root().join("in-use")
    }

    /// Marks `image` as used by the running `backend` instance `id` until the returned value is
    /// dropped. Fails with [`ImageError::NotFound`] when the image was removed meanwhile.
    ///
    /// Takes no store lock, so a run never waits for an import. The order makes that safe: the
    /// file is locked, then its content written, then the index read. A removal whose index no
    /// longer names the image is seen here; one that writes its index later collects only after
    /// that, and its collection reads this mark (content included) and keeps the image.
    pub fn mark_in_use(&self, image: &Image, id: &str, backend: &str) -> Result<InUse, ImageError> {
        let dir = self.in_use_dir();
        fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        // Made under a temporary name of this process's, renamed once written: a mark under
        // its run's name always has its content, and one this process left (SIGKILLed, or its
        // filesystem full) is known dead at once by its pid, not after a minute.
        let tmp = dir.join(fsutil::tmp_name("in-use"));
        let file = File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
        // Blocking: a reader may hold a shared lock for a moment.
        let file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(file, e)| {
            drop(file);
            let _ = fs::remove_file(&tmp);
            ImageError::Io {
                action: "lock",
                path: tmp.clone(),
                source: e.into(),
            }
        })?;
        let mut mark = InUse { path: tmp, file };
        writeln!(&*mark.file, "{} {backend}", image.summary.digest)
            .map_err(ImageError::io("write", &mark.path))?;
        let path = dir.join(id);
        // The lock goes with the file (it is the open file's, not the name's).
        fs::rename(&mark.path, &path).map_err(ImageError::io("rename into place", &path))?;
        mark.path = path;
        if !self
            .read_index()?
            .iter()
            .any(|r| r.digest == image.summary.digest)
        {
            return Err(ImageError::NotFound {
                reference: image.summary.name.clone(),
                root: self.root().to_path_buf(),
            });
        }
        Ok(mark)
    }

    /// The running instances and the image digest each uses; deletes dead runs' marks.
    /// Caller holds the store lock.
    pub(crate) fn users(&self) -> Result<Vec<(String, ImageUser)>, ImageError> {
        let dir = self.in_use_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in crate::read_dir(&dir)? {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(fsutil::TMP_PREFIX) {
                // A mark being made (its run has not read the index yet: not a user), or one a
                // dead process left.
                if !fsutil::tmp_owner_alive(&name) {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let unlocked = match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Ok(_) => true,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => false,
                Err(_) => continue,
            };
            let text = fs::read_to_string(&path).unwrap_or_default();
            if unlocked {
                // Content is written only under the lock: with content, the run is gone; without,
                // it is being made (or its isol died making it: then it is old).
                if !text.is_empty() || older_than_a_minute(&path) {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let mut words = text.split_whitespace();
            if let (Some(digest), Some(backend)) = (words.next(), words.next()) {
                let id = entry.file_name().to_string_lossy().into_owned();
                let backend = backend.to_string();
                out.push((digest.to_string(), ImageUser { id, backend }));
            }
        }
        out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        Ok(out)
    }
}

fn older_than_a_minute(path: &std::path::Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 60)
}
