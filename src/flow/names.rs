//! The users a flow's devices log in as. A flow run once uses the names
//! written in it; each iteration of `termphone load` gives every user a
//! name of its own (`alice` → `PREFIXalice-17`), so that iterations never
//! ring each other's devices.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

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

    /// Every string in `fields` that is one of the flow's users, renamed:
    /// what a step sends (`userID`, `userIDList`) and expects (`sponsor`).
    pub fn rename(&self, fields: &mut Map<String, Value>) {
        if self.iteration.is_some() {
            fields.values_mut().for_each(|v| self.rename_value(v));
        }
    }

    fn rename_value(&self, value: &mut Value) {
        match value {
            Value::String(s) if self.users.contains(s.as_str()) => *s = self.user(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.rename_value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.rename_value(v)),
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
        let mut fields =
            json!({"cmd": "groupCall", "userIDList": ["alice", "bob", "carol"], "text": "alice"})
                .as_object()
                .unwrap()
                .clone();
        names.rename(&mut fields);
        assert_eq!(
            fields["userIDList"],
            json!(["run2-alice-17", "run2-bob-17", "carol"])
        );
        assert_eq!(fields["cmd"], "groupCall");
        // A value that is exactly a user's name is taken as that user.
        assert_eq!(fields["text"], "run2-alice-17");
        assert_eq!(
            names.restore("expected ON_CALL_RECEIVED {\"sponsor\":\"run2-bob-17\"}"),
            "expected ON_CALL_RECEIVED {\"sponsor\":\"bob\"}"
        );
        let once = Names::default();
        assert_eq!(once.user("alice"), "alice");
    }
}
