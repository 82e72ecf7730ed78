//! The users a flow's devices log in as. A flow run once uses the names
//! written in it; each iteration of `termphone load` gives every user a
//! name of its own (`alice` → `PREFIXalice-17`), so that iterations never
//! ring each other's devices.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The keys of commands and events whose values are users (docs/headless.md).
const USER_KEYS: [&str; 7] = [
    "userID",
    "userIDList",
    "sponsor",
    "from",
    "to",
    "by",
    "transferredBy",
];

#[derive(Clone, Debug, Default)]
pub struct Names {
    /// The flow's users, as written.
    users: BTreeSet<String>,
    /// `PREFIX`, and the iteration's number.
    iteration: Option<(String, u64)>,
}

impl Names {
    /// The names of iteration `n` of a flow whose users are `users`.
    pub fn iteration<'a>(users: impl IntoIterator<Item = &'a str>, prefix: &str, n: u64) -> Names {
        Names {
            users: users.into_iter().map(str::to_owned).collect(),
            iteration: Some((prefix.to_owned(), n)),
        }
    }

    /// What `user` logs in as.
    pub fn user(&self, user: &str) -> String {
        match &self.iteration {
            Some((prefix, n)) if self.users.contains(user) => format!("{prefix}{user}-{n}"),
            _ => user.to_owned(),
        }
    }

    /// A tag for this run's files.
    pub fn tag(&self) -> String {
        match &self.iteration {
            Some((_, n)) => format!("i{n}"),
            None => "flow".into(),
        }
    }

    /// Every one of the flow's users in `fields`, renamed: what a step
    /// sends (`userID`, `userIDList`) and expects (`sponsor`, `from`), at
    /// any depth, under the keys that hold users only: a user named `call`
    /// leaves `cmd = "call"` alone, and a message's text is the flow's.
    pub fn rename(&self, fields: &mut Map<String, Value>) {
        if self.iteration.is_none() {
            return;
        }
        for (key, value) in fields.iter_mut() {
            match value {
                Value::Object(map) => self.rename(map),
                Value::Array(items) if !USER_KEYS.contains(&key.as_str()) => {
                    for item in items {
                        if let Value::Object(map) = item {
                            self.rename(map);
                        }
                    }
                }
                _ if USER_KEYS.contains(&key.as_str()) => self.rename_users(value),
                _ => {}
            }
        }
    }

    fn rename_users(&self, value: &mut Value) {
        match value {
            Value::String(s) if self.users.contains(s.as_str()) => *s = self.user(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.rename_users(v)),
            _ => {}
        }
    }

    /// `text` with the iteration's names put back to the flow's, so that
    /// the same failure in two iterations reads the same.
    pub fn restore(&self, text: &str) -> String {
        let Some((prefix, n)) = &self.iteration else {
            return text.to_owned();
        };
        let mut out = text.to_owned();
        for user in &self.users {
            out = out.replace(&format!("{prefix}{user}-{n}"), user);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_iteration_renames_the_flows_users_and_nothing_else() {
        let names = Names::iteration(["alice", "bob"], "run2-", 17);
        assert_eq!(names.user("alice"), "run2-alice-17");
        assert_eq!(names.user("carol"), "carol");
        let mut fields = json!({
            "cmd": "groupCall",
            "userIDList": ["alice", "bob", "carol"],
            "from": "bob",
            "volumeMap": [{"userID": "alice", "volume": 3}],
            "text": "alice",
        })
        .as_object()
        .unwrap()
        .clone();
        names.rename(&mut fields);
        assert_eq!(
            fields["userIDList"],
            json!(["run2-alice-17", "run2-bob-17", "carol"])
        );
        assert_eq!(fields["from"], "run2-bob-17");
        assert_eq!(
            fields["volumeMap"],
            json!([{"userID": "run2-alice-17", "volume": 3}])
        );
        assert_eq!(fields["cmd"], "groupCall");
        // A message is the flow's words, whatever they say.
        assert_eq!(fields["text"], "alice");
        assert_eq!(
            names.restore("expected ON_CALL_RECEIVED {\"sponsor\":\"run2-bob-17\"}"),
            "expected ON_CALL_RECEIVED {\"sponsor\":\"bob\"}"
        );
        let once = Names::default();
        // A user named as a command or a reason is renamed where it is a
        // user only.
        let names = Names::iteration(["call", "timeout"], "", 3);
        let mut step = json!({"cmd": "call", "userID": "call", "reason": "timeout"})
            .as_object()
            .unwrap()
            .clone();
        names.rename(&mut step);
        assert_eq!(
            Value::Object(step),
            json!({"cmd": "call", "userID": "call-3", "reason": "timeout"})
        );
        assert_eq!(once.user("alice"), "alice");
    }
}
