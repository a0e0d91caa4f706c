//! The environment's variables: name to value, kept sorted by name (the
//! order U-Boot's `env export` and [`super::encode`] write them in).
//!
//! A sorted `Vec` rather than a `BTreeMap`: an environment holds tens of
//! variables, read once and changed a few at a time, and the B-tree's node
//! code is several KB of the device binary (measure with `cross/build.sh`).

use std::fmt;

/// The variables of one environment, sorted by name, each name once.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vars {
    sorted: Vec<(String, String)>,
}

impl Vars {
    /// No variables.
    #[must_use]
    pub fn new() -> Self {
        Vars::default()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.sorted.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// The value of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.position(name).ok()?;
        Some(self.sorted[i].1.as_str())
    }

    /// Sets `name` to `value`; returns the value it replaced.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.sorted[i].1, value)),
            Err(i) => {
                self.sorted.insert(i, (name, value));
                None
            }
        }
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.position(name).ok()?;
        Some(self.sorted.remove(i).1)
    }

    /// How many variables.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// No variables.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sorted.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl FromIterator<(String, String)> for Vars {
    /// A later duplicate name wins, as in [`Vars::insert`].
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut vars = Vars::new();
        for (k, v) in iter {
            vars.insert(k, v);
        }
        vars
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::vars;
    use super::*;

    #[test]
    fn kept_sorted_by_name_whatever_the_insertion_order() {
        let v = vars(&[("bootcmd", "run x"), ("baz", "qux"), ("boot_slot", "a")]);
        let names: Vec<&str> = v.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["baz", "boot_slot", "bootcmd"]);
        assert_eq!(
            format!("{v:?}"),
            r#"{"baz": "qux", "boot_slot": "a", "bootcmd": "run x"}"#
        );
    }

    #[test]
    fn insert_replaces_remove_removes_get_finds() {
        let mut v = vars(&[("a", "1"), ("c", "3")]);
        assert_eq!(v.insert("b".into(), "2".into()), None);
        assert_eq!(v.insert("a".into(), "9".into()), Some("1".into()));
        assert_eq!(
            (v.get("a"), v.get("b"), v.get("c"), v.get("d")),
            (Some("9"), Some("2"), Some("3"), None)
        );
        assert_eq!(v.len(), 3);
        assert_eq!(v.remove("b"), Some("2".into()));
        assert_eq!(v.remove("b"), None);
        assert_eq!(v, vars(&[("c", "3"), ("a", "9")]));
        assert_eq!(
            vars(&[("x", "1"), ("x", "2")]),
            vars(&[("x", "2")]),
            "a later duplicate wins"
        );
        assert!(Vars::new().is_empty() && !v.is_empty());
    }
}
