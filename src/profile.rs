//! Profiles: one directory per (app, user, device) in the data directory,
//! holding that device's local store and identity.
//!
//! Without `--device`, a user's first profile that no running termphone holds
//! is reused, else a new device id is generated and kept. So `termphone
//! --user alice` typed in three terminals gives three devices, and the same
//! three again tomorrow.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::ids::{AppId, DeviceId, UserId};

pub struct Profile {
    pub dir: PathBuf,
    pub device: DeviceId,
    /// Held for the life of the process; the OS releases it on exit or crash.
    _lock: Option<File>,
}

#[derive(Debug, thiserror::Error)]
#[error("profile directory {path}: {source}")]
pub struct ProfileError {
    path: String,
    source: std::io::Error,
}

impl Profile {
    pub fn open(
        data_dir: &Path,
        app: AppId,
        user: &UserId,
        device: Option<&DeviceId>,
    ) -> Result<Profile, ProfileError> {
        let user_dir = data_dir
            .join("profiles")
            .join(app.to_string())
            .join(user.as_str());
        let wrap = |path: &Path| {
            let path = path.display().to_string();
            move |source| ProfileError { path, source }
        };
        fs::create_dir_all(&user_dir).map_err(wrap(&user_dir))?;
        if let Some(device) = device {
            let dir = user_dir.join(device.as_str());
            fs::create_dir_all(&dir).map_err(wrap(&dir))?;
            // Two processes may deliberately share a device id (QA does, to
            // test same-device logins): then only the first holds the lock.
            let lock = try_lock(&dir).map_err(wrap(&dir))?;
            return Ok(Profile {
                dir,
                device: device.clone(),
                _lock: lock,
            });
        }
        let mut existing: Vec<(PathBuf, DeviceId)> = fs::read_dir(&user_dir)
            .map_err(wrap(&user_dir))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Some((e.path(), DeviceId::parse(&name).ok()?))
            })
            .collect();
        existing.sort_by(|a, b| a.1.cmp(&b.1));
        for (dir, device) in existing {
            if let Some(lock) = try_lock(&dir).map_err(wrap(&dir))? {
                return Ok(Profile {
                    dir,
                    device,
                    _lock: Some(lock),
                });
            }
        }
        loop {
            let device = new_device_id();
            let dir = user_dir.join(device.as_str());
            if dir.exists() {
                continue;
            }
            fs::create_dir_all(&dir).map_err(wrap(&dir))?;
            let lock = try_lock(&dir).map_err(wrap(&dir))?;
            return Ok(Profile {
                dir,
                device,
                _lock: lock,
            });
        }
    }
}

/// A device id of its own for a device named by nobody: `term-` and six
/// random hex digits.
pub fn new_device_id() -> DeviceId {
    DeviceId::parse(&format!("term-{:06x}", rand::random::<u32>() & 0xff_ffff))
        .expect("generated ids are valid")
}

/// Locks `dir/lock`; `None` if another process holds it.
fn try_lock(dir: &Path) -> std::io::Result<Option<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_of_one_user_get_distinct_devices_that_are_kept() {
        let data = tempfile::tempdir().unwrap();
        let alice = UserId::parse("alice").unwrap();
        let first = Profile::open(data.path(), 1, &alice, None).unwrap();
        let second = Profile::open(data.path(), 1, &alice, None).unwrap();
        assert_ne!(first.device, second.device);
        let (d1, d2) = (first.device.clone(), second.device.clone());
        drop(first);
        drop(second);
        let again = Profile::open(data.path(), 1, &alice, None).unwrap();
        assert!(again.device == d1 || again.device == d2);
        assert!(again.device.as_str().starts_with("term-"));
    }

    #[test]
    fn explicit_device_is_used_even_when_held() {
        let data = tempfile::tempdir().unwrap();
        let alice = UserId::parse("alice").unwrap();
        let d = DeviceId::parse("laptop").unwrap();
        let a = Profile::open(data.path(), 1, &alice, Some(&d)).unwrap();
        let b = Profile::open(data.path(), 1, &alice, Some(&d)).unwrap();
        assert_eq!(a.device, b.device);
        assert!(a.dir.ends_with("profiles/1/alice/laptop"));
    }
}
