//! The relay's durable state in SQLite: users and their devices.
//!
//! Schema changes are numbered migrations recorded in `PRAGMA user_version`,
//! applied in order when the database is opened.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::ids::{AppId, UserId};
use crate::relay::core::StoreOp;

const MIGRATIONS: &[&str] = &[
    // 1: users and the devices they logged in from.
    "CREATE TABLE users (
        app INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (app, user_id)
     ) WITHOUT ROWID;
     CREATE TABLE devices (
        app INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        platform TEXT NOT NULL,
        last_login INTEGER NOT NULL,
        PRIMARY KEY (app, user_id, device_id)
     ) WITHOUT ROWID;",
];

#[derive(Debug, thiserror::Error)]
#[error("relay database {path}: {source}")]
pub struct StoreError {
    path: String,
    source: rusqlite::Error,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let wrap = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        let mut store = Store { conn };
        store.migrate().map_err(wrap)?;
        Ok(store)
    }

    /// An in-memory database, for tests of the shell.
    pub fn in_memory() -> Result<Store, rusqlite::Error> {
        let mut store = Store {
            conn: Connection::open_in_memory()?,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Every user that ever logged in.
    pub fn users(&self) -> rusqlite::Result<Vec<(AppId, UserId)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT app, user_id FROM users ORDER BY app, user_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, AppId>(0)?, r.get::<_, String>(1)?)))?;
        let mut users = Vec::new();
        for row in rows {
            let (app, user) = row?;
            // Rows were validated on the way in; skip any that a hand edit broke.
            if let Ok(user) = UserId::parse(&user) {
                users.push((app, user));
            }
        }
        Ok(users)
    }

    /// Applies a batch of operations in one transaction.
    pub fn apply(&mut self, ops: &[StoreOp]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for op in ops {
            match op {
                StoreOp::RecordLogin {
                    app,
                    user,
                    device,
                    platform,
                    at,
                } => {
                    let at = *at as i64;
                    tx.execute(
                        "INSERT OR IGNORE INTO users (app, user_id, created_at) VALUES (?1, ?2, ?3)",
                        params![app, user.as_str(), at],
                    )?;
                    tx.execute(
                        "INSERT INTO devices (app, user_id, device_id, platform, last_login)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (app, user_id, device_id)
                         DO UPDATE SET platform = excluded.platform, last_login = excluded.last_login",
                        params![app, user.as_str(), device.as_str(), platform.as_str(), at],
                    )?;
                }
            }
        }
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, Platform};

    #[test]
    fn logins_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sqlite3");
        let alice = UserId::parse("alice").unwrap();
        {
            let mut store = Store::open(&path).unwrap();
            let login = StoreOp::RecordLogin {
                app: 5,
                user: alice.clone(),
                device: DeviceId::parse("d1").unwrap(),
                platform: Platform::terminal(),
                at: 1,
            };
            store.apply(&[login.clone(), login]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.users().unwrap(), vec![(5, alice)]);
    }
}
